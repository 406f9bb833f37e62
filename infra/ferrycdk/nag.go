package ferrycdk

import (
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// suppress records why a cdk-nag AwsSolutions finding does not apply to c
// (and its children). appliesTo narrows it to the named findings, such as
// "Resource::*".
func suppress(c constructs.IConstruct, rule, reason string, appliesTo ...string) {
	s := &cdknag.NagPackSuppression{Id: str(rule), Reason: str(reason)}
	if len(appliesTo) > 0 {
		var at []any
		for _, a := range appliesTo {
			at = append(at, a)
		}
		s.AppliesTo = &at
	}
	cdknag.NagSuppressions_AddResourceSuppressions(c, &[]*cdknag.NagPackSuppression{s}, yes)
}
