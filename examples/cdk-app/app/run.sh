#!/bin/sh
# Started by ferry's bootstrap (the function's handler): serve on $PORT.
exec python3 "$LAMBDA_TASK_ROOT/server.py"
