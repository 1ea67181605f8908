// Package all links the standard set of modules into the server.
package all

import (
	_ "impetus/internal/modules/disco"
	_ "impetus/internal/modules/offline"
	_ "impetus/internal/modules/ping"
	_ "impetus/internal/modules/presence"
	_ "impetus/internal/modules/roster"
	_ "impetus/internal/modules/scriptlet"
	_ "impetus/internal/modules/version"
)

// Standard lists the modules every hosted domain runs, in provisioning order.
// The roster comes before presence, which uses it. The scriptlet module does nothing unless
// the configuration has a scriptlet scope.
var Standard = []string{"disco", "ping", "version", "roster", "presence", "offline", "scriptlet"}
