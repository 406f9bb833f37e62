package dialback

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	good := Payload{Router: "127.0.0.1:1", Token: "t", Pin: "sha256/" + strings.Repeat("A", 43) + "=", Function: "app", MaxConcurrency: 8, LingerMs: 2}
	ev, err := Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		event   string
		wantOK  bool
		wantErr bool
	}{
		"dial-back":          {string(ev), true, false},
		"function url":       {`{"version":"2.0","rawPath":"/"}`, false, false},
		"not json":           {`hello`, false, false},
		"json array":         {`[1,2]`, false, false},
		"null ferry":         {`{"ferry":null}`, false, false},
		"bad version":        {`{"ferry":{"v":2,"router":"a:1","token":"t","pin":"sha256/x"}}`, true, true},
		"missing router":     {`{"ferry":{"v":1,"token":"t","pin":"sha256/x"}}`, true, true},
		"bad pin":            {`{"ferry":{"v":1,"router":"a:1","token":"t","pin":"md5/x"}}`, true, true},
		"negative linger":    {`{"ferry":{"v":1,"router":"a:1","token":"t","pin":"` + good.Pin + `","linger_ms":-1}}`, true, true},
		"huge linger":        {`{"ferry":{"v":1,"router":"a:1","token":"t","pin":"` + good.Pin + `","linger_ms":99999999}}`, true, true},
		"negative linger_us": {`{"ferry":{"v":1,"router":"a:1","token":"t","pin":"` + good.Pin + `","linger_us":-1}}`, true, true},
		"huge linger_us":     {`{"ferry":{"v":1,"router":"a:1","token":"t","pin":"` + good.Pin + `","linger_us":3600000001}}`, true, true},
		"huge concurrency":   {`{"ferry":{"v":1,"router":"a:1","token":"t","pin":"` + good.Pin + `","max_concurrency":100000}}`, true, true},
		"first not an event": {`{"ferry":{"v":1,"router":"a:1","token":"t","pin":"` + good.Pin + `","first":"GET /"}}`, true, true},
		"first null":         {`{"ferry":{"v":1,"router":"a:1","token":"t","pin":"` + good.Pin + `","first":null}}`, true, false},
		"first":              {`{"ferry":{"v":1,"router":"a:1","token":"t","pin":"` + good.Pin + `","first":{"version":"2.0"}}}`, true, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p, ok, err := Parse([]byte(tc.event))
			if ok != tc.wantOK || (err != nil) != tc.wantErr {
				t.Fatalf("Parse = %+v, %v, %v; want ok=%v err=%v", p, ok, err, tc.wantOK, tc.wantErr)
			}
			if name == "dial-back" && !reflect.DeepEqual(p, Payload{V: 1, Router: good.Router, Token: "t", Pin: good.Pin, Function: "app", MaxConcurrency: 8, LingerMs: 2}) {
				t.Errorf("Parse = %+v, want the marshalled payload", p)
			}
		})
	}
}

func TestLinger(t *testing.T) {
	pin := "sha256/" + strings.Repeat("A", 43) + "="
	base := Payload{Router: "127.0.0.1:1", Token: "t", Pin: pin}
	cases := map[string]struct {
		p       Payload
		want    time.Duration
		wantSet bool
		wantMs  int // what a bootstrap reading only linger_ms sees
	}{
		"none":             {base, 0, false, 0},
		"ms only":          {Payload{Router: "r:1", Token: "t", Pin: pin, LingerMs: 3}, 3 * time.Millisecond, true, 3},
		"end at once":      {base.WithLinger(0), 0, true, 0},
		"sub-millisecond":  {base.WithLinger(300 * time.Microsecond), 300 * time.Microsecond, true, 1},
		"whole ms":         {base.WithLinger(2 * time.Millisecond), 2 * time.Millisecond, true, 2},
		"negative clamped": {base.WithLinger(-time.Second), 0, true, 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ev, err := Marshal(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			p, ok, err := Parse(ev)
			if !ok || err != nil {
				t.Fatalf("Parse(%s) = %v, %v", ev, ok, err)
			}
			if got, set := p.Linger(); got != tc.want || set != tc.wantSet {
				t.Errorf("Linger() = %v, %v; want %v, %v", got, set, tc.want, tc.wantSet)
			}
			if p.LingerMs != tc.wantMs {
				t.Errorf("linger_ms = %d, want %d", p.LingerMs, tc.wantMs)
			}
		})
	}
}

func TestCPUFromLog(t *testing.T) {
	line := func(id, ms string) string { return CPULinePrefix + " RequestId: " + id + "\tCPU Time: " + ms + " ms\n" }
	report := "END RequestId: a\nREPORT RequestId: a\tDuration: 12.00 ms\tBilled Duration: 12 ms\n"
	cases := map[string]struct {
		tail, id string
		want     time.Duration
		ok       bool
	}{
		"the invocation's line":      {"app log\n" + line("a", "12.408") + report, "a", 12408 * time.Microsecond, true},
		"any id":                     {line("a", "3"), "", 3 * time.Millisecond, true},
		"the last of its lines":      {line("a", "1") + line("a", "2.5"), "a", 2500 * time.Microsecond, true},
		"another invocation's line":  {line("b", "7") + report, "a", 0, false},
		"its own among others":       {line("a", "4") + line("b", "7"), "a", 4 * time.Millisecond, true},
		"none":                       {report, "a", 0, false},
		"not at a line's start":      {"app says " + line("a", "9"), "a", 0, false},
		"not a number":               {line("a", "x"), "a", 0, false},
		"absurd":                     {line("a", "2000000000"), "a", 0, false},
		"truncated by the tail's 4K": {"Time: 5 ms\n" + report, "a", 0, false},
	}
	for name, c := range cases {
		got, ok := CPUFromLog(c.tail, c.id)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: CPUFromLog = %v, %v; want %v, %v", name, got, ok, c.want, c.ok)
		}
	}
}
