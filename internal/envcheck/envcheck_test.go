package envcheck

import (
	"reflect"
	"strings"
	"testing"
)

func TestUnknown(t *testing.T) {
	known := []string{"FERRY_ROUTER_QUEUE_TIMEOUT", "FERRY_ROUTER_QUEUE_LIMIT", "FERRY_ROUTER_LISTEN"}
	for _, tc := range []struct {
		name    string
		environ []string
		want    []string
	}{
		{"known names and other programs' pass", []string{"FERRY_ROUTER_LISTEN=:80", "PATH=/bin", "AWS_REGION=x", "FERRY_ROUTER_QUEUE_LIMIT=5"}, nil},
		{"a misspelling names the setting meant", []string{"FERRY_ROUTER_QUEUE_TIMOUT=5s"},
			[]string{"FERRY_ROUTER_QUEUE_TIMOUT is not a setting this program reads; it is ignored (did you mean FERRY_ROUTER_QUEUE_TIMEOUT?)"}},
		{"a name like none is only named", []string{"FERRY_ROUTER_COLOUR=blue"},
			[]string{"FERRY_ROUTER_COLOUR is not a setting this program reads; it is ignored"}},
		{"an empty value is still a setting", []string{"FERRY_ROUTER_LISTN="},
			[]string{"FERRY_ROUTER_LISTN is not a setting this program reads; it is ignored (did you mean FERRY_ROUTER_LISTEN?)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Unknown(tc.environ, "FERRY_ROUTER_", known); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestUnknownNeverShowsAValue(t *testing.T) {
	got := Unknown([]string{"FERRY_ROUTER_TOKEN_SECRE=hunter2"}, "FERRY_ROUTER_", []string{"FERRY_ROUTER_TOKEN_SECRET"})
	if len(got) != 1 || strings.Contains(got[0], "hunter2") {
		t.Errorf("got %q: want one warning without the value", got)
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "abc", 0}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"TIMOUT", "TIMEOUT", 1}} {
		if got := distance(tc.a, tc.b); got != tc.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
