// Package all links the standard set of modules into the server.
package all

import (
	_ "impetus/internal/modules/blocking"
	_ "impetus/internal/modules/bookmarks"
	_ "impetus/internal/modules/caps"
	_ "impetus/internal/modules/carbons"
	_ "impetus/internal/modules/disco"
	_ "impetus/internal/modules/entitytime"
	_ "impetus/internal/modules/extdisco"
	_ "impetus/internal/modules/last"
	_ "impetus/internal/modules/mam"
	_ "impetus/internal/modules/muc"
	_ "impetus/internal/modules/offline"
	_ "impetus/internal/modules/pep"
	_ "impetus/internal/modules/ping"
	_ "impetus/internal/modules/presence"
	_ "impetus/internal/modules/private"
	_ "impetus/internal/modules/push"
	_ "impetus/internal/modules/register"
	_ "impetus/internal/modules/roster"
	_ "impetus/internal/modules/scriptlet"
	_ "impetus/internal/modules/upload"
	_ "impetus/internal/modules/vcard"
	_ "impetus/internal/modules/version"
)

// Standard lists the modules every hosted domain runs, in provisioning order.
// The roster comes before presence, which uses it. The scriptlet module does nothing unless
// the configuration has a scriptlet scope.
var Standard = []string{"disco", "ping", "version", "roster", "presence", "offline", "mam", "scriptlet", "caps", "blocking", "vcard", "last", "time", "register", "pep", "private", "bookmarks", "carbons", "extdisco", "push", "upload"}

// Services lists the modules a service domain (a domain scope with XMPP_Service) runs instead
// of Standard, by service name. The service's own module answers discovery for its domain.
var Services = map[string][]string{
	"muc": {"ping", "version", "muc"},
}
