package ferrycdk_test

import (
	"path/filepath"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/jsii-runtime-go"

	"github.com/ferryrun/ferry/infra/ferrycdk"
)

// A function given a streaming Function URL gets a URL with InvokeMode
// RESPONSE_STREAM and a bootstrap told to stream (FERRY_INVOKE_MODE), both
// or neither: a streaming URL over a buffering bootstrap would answer with
// its JSON event as the body.
func TestStreamingFunctionURL(t *testing.T) {
	app := newApp(map[string]any{})
	st := awscdk.NewStack(app, jsii.String("Streaming"), nil)
	layer := ferrycdk.NewFerryLayer(st, "Layer", &ferrycdk.FerryLayerProps{ArtifactsDir: artifacts})
	code := awslambda.Code_FromAsset(jsii.String(filepath.Join(artifacts, "sample-app-arm64.zip")), nil)
	streamed := ferrycdk.NewFerryFunction(st, "Streamed", &ferrycdk.FerryFunctionProps{Code: code, Layer: layer,
		URLAuth: awslambda.FunctionUrlAuthType_AWS_IAM, StreamResponses: true})
	buffered := ferrycdk.NewFerryFunction(st, "Buffered", &ferrycdk.FerryFunctionProps{Code: code, Layer: layer,
		URLAuth: awslambda.FunctionUrlAuthType_AWS_IAM})
	if streamed.URL == nil || buffered.URL == nil {
		t.Fatal("a function given URLAuth has no URL")
	}
	tmpl := assertions.Template_FromStack(st, nil)
	urls := resources(tmpl, "AWS::Lambda::Url")
	modes := map[string]int{}
	for _, u := range urls {
		mode, _ := u["Properties"].(map[string]any)["InvokeMode"].(string)
		modes[mode]++
	}
	if len(urls) != 2 || modes["RESPONSE_STREAM"] != 1 || modes["BUFFERED"] != 1 {
		t.Errorf("Function URLs %v: want one RESPONSE_STREAM and one BUFFERED", modes)
	}
	streaming := 0
	for _, fn := range resources(tmpl, "AWS::Lambda::Function") {
		env, _ := fn["Properties"].(map[string]any)["Environment"].(map[string]any)
		vars, _ := env["Variables"].(map[string]any)
		if vars["FERRY_INVOKE_MODE"] == "response_stream" {
			streaming++
		}
	}
	if streaming != 1 {
		t.Errorf("%d functions told to stream, want the one with the streaming URL", streaming)
	}

	defer func() {
		if recover() == nil {
			t.Error("StreamResponses without a Function URL was taken")
		}
	}()
	ferrycdk.NewFerryFunction(st, "NoURL", &ferrycdk.FerryFunctionProps{Code: code, Layer: layer, StreamResponses: true})
}
