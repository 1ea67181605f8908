package register_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"impetus/internal/modules/register"
)

func TestDataForms(t *testing.T) {
	srv, st, _ := setup(t, true)
	ctx := context.Background()
	fn := srv.Hosts["example.com"].PreAuthIQ(register.NS, "query")

	// The registration form is offered next to the fields (XEP-0077 §5).
	res, err := fn(ctx, "192.0.2.9:1", iq(t, `<iq type='get' id='f'><query xmlns='jabber:iq:register'/></iq>`))
	if err != nil {
		t.Fatal(err)
	}
	x := res.Child(register.NSData, "x")
	if x == nil || x.Attr("type") != "form" {
		t.Fatalf("no form: %s", res)
	}
	got := x.String()
	for _, want := range []string{`<field var="FORM_TYPE" type="hidden"><value>jabber:iq:register</value></field>`,
		`<field var="username" type="text-single" label="Username"><required/></field>`,
		`<field var="password" type="text-private" label="Password"><required/></field>`} {
		if !strings.Contains(got, want) {
			t.Errorf("form lacks %s: %s", want, got)
		}
	}

	form := func(typ, user, pw string) string {
		return `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>` + typ + `</value></field>` +
			`<field var='username'><value>` + user + `</value></field><field var='password'><value>` + pw + `</value></field></x>`
	}
	// Registration with the form.
	if _, err := fn(ctx, "192.0.2.9:1", iq(t, `<iq type='set' id='r'><query xmlns='jabber:iq:register'>`+form("jabber:iq:register", "dora", "longenough")+`</query></iq>`)); err != nil {
		t.Fatal(err)
	}
	if c, err := st.Lookup(ctx, "dora", "example.com"); err != nil || !c.CheckPassword("longenough") {
		t.Fatalf("dora not stored: %v", err)
	}
	// Both the form and the fields, a form not submitted, or a foreign FORM_TYPE are refused.
	for i, q := range []string{
		form("jabber:iq:register", "ed", "longenough") + `<username>ed</username><password>longenough</password>`,
		`<x xmlns='jabber:x:data' type='form'/>`,
		form("urn:example:other", "ed", "longenough"),
	} {
		_, err := fn(ctx, "192.0.2."+strconv.Itoa(20+i)+":1", iq(t, `<iq type='set' id='r'><query xmlns='jabber:iq:register'>`+q+`</query></iq>`))
		if condition(err) != "bad-request" {
			t.Errorf("%s: %v", q, err)
		}
	}

	// A password change with the changepassword form.
	srv.AddAccount("alice@example.com")
	alice := srv.Connect("alice@example.com/a")
	alice.Input(`<iq type='set' id='c' to='example.com'><query xmlns='jabber:iq:register'>` + form(register.FormChange, "alice", "anotherpassword") + `</query></iq>`)
	if got := strings.Join(alice.Take(), ""); !strings.Contains(got, `type="result" id="c"`) {
		t.Fatal(got)
	}
	if c, err := st.Lookup(ctx, "alice", "example.com"); err != nil || !c.CheckPassword("anotherpassword") {
		t.Fatalf("password not changed: %v", err)
	}
}
