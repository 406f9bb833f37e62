# ferry — see README.md. Every target works offline once Go modules are cached.
GO      ?= go
DIST    ?= dist
# What the binaries say to --version: git describe of this checkout.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
STAMP   := -X github.com/ferryrun/ferry/internal/version.stamp=$(VERSION)
LDFLAGS := -s -w $(STAMP)
export CGO_ENABLED := 0

.PHONY: all build layer synth deploy destroy test e2e fuzz lint demo bench soak clean chaos local-up local-down local-deploy local-start local-stop local-destroy metrics

all: build

## build: static binaries in dist/: the bootstrap for both Lambda architectures,
## the router, the Lambda emulator and the sample app (host architecture).
build:
	@mkdir -p $(DIST)/linux-amd64 $(DIST)/linux-arm64
	GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/linux-amd64/bootstrap ./bootstrap
	GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/linux-arm64/bootstrap ./bootstrap
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $(DIST)/lambda-emulator ./localstack/cmd/lambda-emulator
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $(DIST)/goapp ./examples/goapp
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $(DIST)/ferry-router ./router
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $(DIST)/ferry ./cmd/ferry
	@ls -l $(DIST)/linux-amd64/bootstrap $(DIST)/linux-arm64/bootstrap | awk '{printf "%-32s %6.2f MB\n", $$9, $$5/1048576}'

## demo: ferry vs one request per invocation, side by side, on this machine.
# The binaries make demo and make bench run, built into $(1).
define local-binaries
	@mkdir -p $(1)
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $(1)/bootstrap ./bootstrap
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $(1)/goapp ./examples/goapp
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $(1)/lambda-emulator ./localstack/cmd/lambda-emulator
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $(1)/ferry-router ./router
endef

DEMO_FOR ?= 15s
demo:
	$(call local-binaries,$(DIST)/demo)
	$(GO) build -trimpath -o $(DIST)/demo/bench ./bench
	$(DIST)/demo/bench -dist $(DIST)/demo -demo $(DEMO_FOR)

## bench: what ferry saves and what it costs, side by side, into bench/RESULTS.md
## (about 15 minutes; BENCH_FLAGS=-short for about 3).
bench:
	$(call local-binaries,$(DIST)/bench)
	$(GO) build -trimpath -o $(DIST)/bench/bench ./bench
	$(DIST)/bench/bench -dist $(DIST)/bench $(BENCH_FLAGS)

## soak: steady mixed load through the local stack for SOAK_FOR (30m), a row
## a minute of the router's memory, goroutines and descriptors; fails on an error.
SOAK_FOR ?= 30m
soak:
	$(call local-binaries,$(DIST)/bench)
	$(GO) build -trimpath -o $(DIST)/bench/bench ./bench
	$(DIST)/bench/bench -dist $(DIST)/bench -soak $(SOAK_FOR)

## layer: dist/ferry-layer-{arm64,x86_64}.zip and dist/sample-app-{arm64,x86_64}.zip, reproducibly.
layer:
	$(GO) run ./layers -out $(DIST)

CDK := .cdk/node_modules/.bin/cdk
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_VERSION_CHECK := 1

$(CDK): .cdk/package.json .cdk/package-lock.json
	cd .cdk && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## synth: the CloudFormation templates in cdk.out, offline, no AWS credentials needed.
synth: $(CDK)
	$(CDK) synth --quiet --no-notices --no-version-reporting
	@ls cdk.out/*.template.json

## deploy: cdk deploy --all (after cdk bootstrap; see README "Deploy to AWS").
deploy: $(CDK)
	$(CDK) deploy --all --no-notices $(CDK_FLAGS)

destroy: $(CDK)
	$(CDK) destroy --all --no-notices $(CDK_FLAGS)

## test: vet, then every test with the race detector (needs cgo for -race),
## the e2e suite over the local AWS among them (it needs the CDK CLI).
test: $(CDK)
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 8m ./...

## fuzz: every fuzz target in turn, each for FUZZTIME (not in CI; make test
## runs their seed corpora). A crasher lands in the package's testdata/fuzz.
FUZZTIME ?= 1m
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for fn in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$fn ($$pkg) for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## chaos: the chaos tests under CHAOS_FOR (60s) of load each, and the
## 30 s turnover (make test runs them for a few seconds).
CHAOS_FOR ?= 60s
chaos:
	FERRY_CHAOS_FOR=$(CHAOS_FOR) CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 60m -v -run 'TestChaos|TestTurnoverUnderContinuousLoad' ./router/

## e2e: only the end-to-end suite: deploy to a local AWS, load, metrics, teardown.
e2e: $(CDK)
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m -v ./e2e/

## Local AWS (README "Local AWS"): moto on LocalStack's edge port, the stack
## deployed onto it with the CDK CLI, and its data plane run on this machine.
LOCAL_PORT     ?= 4566
LOCAL_DIR      ?= .local
LOCAL_ENDPOINT ?= http://localhost:$(LOCAL_PORT)
LOCAL_INGRESS  ?= 127.0.0.1:8080
LOCAL_STACK    ?= Ferry-us-east-1
HOST_LAMBDA_ARCH := $(if $(filter arm64,$(shell $(GO) env GOARCH)),arm64,x86_64)
# The CDK CLI (Node's SDK) and ferry read the endpoint from AWS_ENDPOINT_URL.
# S3 goes to the IP so the SDK uses path-style bucket addresses; the rest to
# localhost, whose template URLs moto's CloudFormation can read back.
LOCAL_AWS = AWS_ENDPOINT_URL=$(LOCAL_ENDPOINT) AWS_ENDPOINT_URL_S3=$(subst localhost,127.0.0.1,$(LOCAL_ENDPOINT)) \
	AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
# No Docker engine builds the router image, and the emulator runs native
# binaries: a prebuilt image name, and the sample for this machine's arch.
LOCAL_CDK = $(LOCAL_AWS) $(CDK) --no-notices --output $(LOCAL_DIR)/cdk.out -c regions=us-east-1 \
	-c routerImage=ferry-router:local -c sampleArch=$(HOST_LAMBDA_ARCH) -c routerTasks=1 -c artifactsDir=$(DIST)
LOCAL_BIN = $(DIST)/ferry $(DIST)/ferry-router $(DIST)/lambda-emulator

# Always handed to go build, whose cache makes an unchanged build free.
.PHONY: FORCE
$(DIST)/ferry: FORCE
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $@ ./cmd/ferry
$(DIST)/ferry-router: FORCE
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $@ ./router
$(DIST)/lambda-emulator: FORCE
	$(GO) build -trimpath -ldflags='$(STAMP)' -o $@ ./localstack/cmd/lambda-emulator

## local-up / local-down: start / stop the local AWS on 127.0.0.1:$(LOCAL_PORT).
local-up:
	LOCAL_PORT=$(LOCAL_PORT) LOCAL_DIR=$(LOCAL_DIR) localstack/scripts/local-up.sh

local-down: local-stop
	LOCAL_DIR=$(LOCAL_DIR) localstack/scripts/local-down.sh

## local-deploy: cdk bootstrap + cdk deploy onto the local AWS, then run the
## deployed data plane (Lambda emulator + ferry-router) on this machine.
define start-dataplane
	$(DIST)/ferry local stop -state $(LOCAL_DIR)
	$(LOCAL_AWS) $(DIST)/ferry local start -stack $(LOCAL_STACK) -state $(LOCAL_DIR) -bin $(DIST) -ingress $(LOCAL_INGRESS)
endef
local-deploy: layer $(CDK) $(LOCAL_BIN)
	$(LOCAL_CDK) bootstrap
	$(LOCAL_CDK) deploy --all --require-approval never
	$(start-dataplane)

## local-start: (re)start the data plane on what the local AWS holds now:
## the stack's functions and any attached since (ferry attach).
local-start: $(LOCAL_BIN)
	$(start-dataplane)

## local-stop: stop the local data plane (the local AWS keeps running).
local-stop: $(DIST)/ferry
	$(DIST)/ferry local stop -state $(LOCAL_DIR)

## local-destroy: stop the data plane and cdk destroy the local stack.
local-destroy: local-stop $(CDK)
	$(LOCAL_CDK) destroy --all --force

## metrics: ferry metrics against the local AWS, e.g.
##   make metrics METRICS_FLAGS="-function NAME -since 15m -png metrics.png"
metrics: $(DIST)/ferry
	$(LOCAL_AWS) $(DIST)/ferry metrics $(METRICS_FLAGS)

## lint: formatting and vet.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@out=$$(git ls-files -z | xargs -0 -r grep -l -s -a -P '\A\x7fELF' -- 2>/dev/null || true); if [ -n "$$out" ]; then echo "build output tracked in git (git rm --cached it):"; echo "$$out"; exit 1; fi

clean:
	rm -rf $(DIST) cdk.out
