package ferrycdk

import (
	"path/filepath"

	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/constructs-go/constructs/v10"
)

// FerryLayerProps configure NewFerryLayer.
type FerryLayerProps struct {
	// ArtifactsDir holds ferry-layer-arm64.zip and ferry-layer-x86_64.zip
	// (make layer). If empty, the layer is built at synth from ferry's
	// module source (SourceDir), reproducibly: no ferry checkout needed.
	ArtifactsDir string
}

// FerryLayer is ferry's bootstrap as a layer, one version per architecture.
// It serves provided.al2023 directly and managed runtimes through
// AWS_LAMBDA_EXEC_WRAPPER=/opt/ferry-exec-wrapper.
type FerryLayer struct {
	Arm64 awslambda.LayerVersion
	X8664 awslambda.LayerVersion
}

// Runtimes the layer is compatible with.
func layerRuntimes() *[]awslambda.Runtime {
	return &[]awslambda.Runtime{
		awslambda.Runtime_PROVIDED_AL2023(), awslambda.Runtime_NODEJS_22_X(), awslambda.Runtime_PYTHON_3_13(),
	}
}

// NewFerryLayer publishes both layer versions.
func NewFerryLayer(scope constructs.Construct, id string, props *FerryLayerProps) *FerryLayer {
	var dir string
	if props != nil && props.ArtifactsDir != "" {
		dir = props.ArtifactsDir
	} else {
		dir = builtArtifacts(scope, false)
	}
	mk := func(suffix, zip string, arch awslambda.Architecture) awslambda.LayerVersion {
		return awslambda.NewLayerVersion(scope, str(id+suffix), &awslambda.LayerVersionProps{
			Code:                    awslambda.Code_FromAsset(str(filepath.Join(dir, zip)), nil),
			CompatibleArchitectures: &[]awslambda.Architecture{arch},
			CompatibleRuntimes:      layerRuntimes(),
			Description:             str("ferry bootstrap: many concurrent requests per Lambda invocation (" + *arch.Name() + ")"),
			License:                 str("Apache-2.0"),
		})
	}
	return &FerryLayer{
		Arm64: mk("Arm64", "ferry-layer-arm64.zip", awslambda.Architecture_ARM_64()),
		X8664: mk("X8664", "ferry-layer-x86_64.zip", awslambda.Architecture_X86_64()),
	}
}

// For returns the layer version for arch.
func (l *FerryLayer) For(arch awslambda.Architecture) awslambda.LayerVersion {
	if *arch.Name() == *awslambda.Architecture_X86_64().Name() {
		return l.X8664
	}
	return l.Arm64
}
