package test

import (
	"slices"
	"testing"
)

// TestSlixmppRegistrationForm registers an account in band with slixmpp submitting the
// server's XEP-0077 data form rather than the fixed fields, then changes its password with a
// jabber:iq:register:changepassword form.
func TestSlixmppRegistrationForm(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startServicesServer(t, b, imOptions{Users: users("alice")})
		res := runSlixOK[map[string]any](t, srv.Server, "register_form.py", slixTimeout, "form",
			"--jid", "formie@"+testDomain, "--password", "first-password", "--peer-password", "second-password")
		if got := strs(res, "form_fields"); !slices.Equal(got, []string{"FORM_TYPE", "password", "username"}) {
			t.Errorf("form fields: %v", got)
		}
		if str(res, "form_type") != "jabber:iq:register" || res["registered"] != true || res["changed"] != true || res["login_new_password"] != true {
			t.Errorf("registration with the form: %v", res)
		}
	})
}
