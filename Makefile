# ferry — see README.md. Every target works offline once Go modules are cached.
GO      ?= go
DIST    ?= dist
LDFLAGS := -s -w
export CGO_ENABLED := 0

.PHONY: all build layer synth deploy destroy test lint demo bench clean

all: build

## build: static binaries in dist/: the bootstrap for both Lambda architectures,
## the router, the Lambda emulator and the sample app (host architecture).
build:
	@mkdir -p $(DIST)/linux-amd64 $(DIST)/linux-arm64
	GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/linux-amd64/bootstrap ./bootstrap
	GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(DIST)/linux-arm64/bootstrap ./bootstrap
	$(GO) build -trimpath -o $(DIST)/lambda-emulator ./localstack/cmd/lambda-emulator
	$(GO) build -trimpath -o $(DIST)/goapp ./examples/goapp
	$(GO) build -trimpath -o $(DIST)/ferry-router ./router
	@ls -l $(DIST)/linux-amd64/bootstrap $(DIST)/linux-arm64/bootstrap | awk '{printf "%-32s %6.2f MB\n", $$9, $$5/1048576}'

## demo: ferry vs one request per invocation, side by side, on this machine.
demo:
	@mkdir -p $(DIST)/demo
	$(GO) build -trimpath -o $(DIST)/demo/bootstrap ./bootstrap
	$(GO) build -trimpath -o $(DIST)/demo/goapp ./examples/goapp
	$(GO) build -trimpath -o $(DIST)/demo/lambda-emulator ./localstack/cmd/lambda-emulator
	$(GO) build -trimpath -o $(DIST)/demo/ferry-router ./router
	$(GO) build -trimpath -o $(DIST)/demo/demo ./examples/demo
	$(DIST)/demo/demo -dist $(DIST)/demo $(DEMO_FLAGS)

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
synth: layer $(CDK)
	$(CDK) synth --all --quiet --no-notices --no-version-reporting
	@ls cdk.out/*.template.json

## deploy: cdk deploy --all (after cdk bootstrap; see README "Deploy to AWS").
deploy: layer $(CDK)
	$(CDK) deploy --all --no-notices $(CDK_FLAGS)

destroy: $(CDK)
	$(CDK) destroy --all --no-notices $(CDK_FLAGS)

## test: vet, then every test with the race detector (needs cgo for -race).
test:
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...

## lint: formatting and vet.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(DIST) cdk.out
