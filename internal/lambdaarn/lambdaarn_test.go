package lambdaarn

import "testing"

func TestFunctionName(t *testing.T) {
	cases := map[string]string{
		"app":                       "app",
		"app:live":                  "app",
		"123456789012:function:app": "app",
		"arn:aws:lambda:us-east-1:123:function:app":      "app",
		"arn:aws:lambda:us-east-1:123:function:app:7":    "app",
		"arn:aws:lambda:us-east-1:123:function:app:live": "app",
	}
	for ref, want := range cases {
		if got := FunctionName(ref); got != want {
			t.Errorf("FunctionName(%q) = %q, want %q", ref, got, want)
		}
	}
}
