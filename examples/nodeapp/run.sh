#!/bin/sh
# Started by ferry's bootstrap with PORT set.
exec node "$(dirname "$0")/index.js"
