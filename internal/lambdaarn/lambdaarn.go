// Package lambdaarn reads Lambda function references: a name, a partial
// ARN or a full ARN, with or without a version or alias qualifier.
package lambdaarn

import "strings"

// FunctionName returns the bare function name of ref:
// "arn:aws:lambda:us-east-1:123:function:app:live" -> "app",
// "123:function:app" -> "app", "app:1" -> "app", "app" -> "app".
func FunctionName(ref string) string {
	if i := strings.Index(ref, "function:"); i >= 0 {
		ref = ref[i+len("function:"):]
	}
	if i := strings.IndexByte(ref, ':'); i >= 0 {
		ref = ref[:i]
	}
	return ref
}
