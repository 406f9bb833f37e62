package server

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestLambdaHealth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &lambdaHealth{after: 30 * time.Second}
		steps := []struct {
			what  string
			do    func()
			wait  time.Duration
			unrdy bool
		}{
			{"no call yet", func() {}, 0, false},
			{"failing for 29 s", h.failed, 29 * time.Second, false},
			{"failing for 30 s", h.failed, time.Second, true},
			{"a call works", h.ok, 0, false},
			{"failing again, 10 s", h.failed, 10 * time.Second, false},
			{"and 25 s more", h.failed, 25 * time.Second, true},
			{"no call since: held for 4x the while after the last failure", func() {}, 85 * time.Second, true},
			{"past the hold: ready, traffic may try again", func() {}, 10 * time.Second, false},
			{"it fails again: a new while begins", h.failed, 29 * time.Second, false},
			{"and unready at its end", h.failed, time.Second, true},
		}
		for _, s := range steps {
			s.do()
			time.Sleep(s.wait)
			if _, got := h.failing(time.Now()); got != s.unrdy {
				t.Fatalf("%s: unready %v, want %v", s.what, got, s.unrdy)
			}
		}
		// Failures past the hold are forgotten even if nobody asked in
		// between; a call that worked makes a peer's failures its own.
		quiet := &lambdaHealth{after: 30 * time.Second}
		quiet.failed()
		time.Sleep(200 * time.Second)
		quiet.failed()
		time.Sleep(time.Second)
		if _, got := quiet.failing(time.Now()); got {
			t.Fatal("a failure long past the hold still counted")
		}
		if quiet.recentlyOK(time.Now()) {
			t.Fatal("recentlyOK with no call that worked")
		}
		quiet.ok()
		time.Sleep(29 * time.Second)
		if !quiet.recentlyOK(time.Now()) {
			t.Fatal("a call 29 s ago is not recent")
		}
		time.Sleep(time.Second)
		if quiet.recentlyOK(time.Now()) {
			t.Fatal("a call 30 s ago is still recent")
		}
		off := &lambdaHealth{}
		off.failed()
		time.Sleep(time.Hour)
		off.failed()
		if _, got := off.failing(time.Now()); got {
			t.Fatal("unready with the check off")
		}
	})
}
