package entitytime_test

import (
	"strings"
	"testing"
	"time"

	"impetus/internal/modules/entitytime"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage/memory"
)

func TestEntityTime(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	zone := time.FixedZone("x", -(5*3600 + 30*60))
	m := &entitytime.Time{Now: func() time.Time { return time.Date(2006, 12, 19, 12, 28, 35, 0, zone) }}
	if err := m.Provision(srv.Hosts["example.com"]); err != nil {
		t.Fatal(err)
	}
	a := srv.Connect("alice@example.com/a")
	a.Input(`<iq type='get' id='t1' to='example.com'><time xmlns='urn:xmpp:time'/></iq>`)
	got := strings.Join(a.Take(), "")
	if !strings.Contains(got, `<time xmlns="urn:xmpp:time"><tzo>-05:30</tzo><utc>2006-12-19T17:58:35Z</utc></time>`) {
		t.Fatal(got)
	}
}
