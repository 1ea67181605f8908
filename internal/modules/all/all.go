// Package all links the standard set of modules into the server.
package all

import (
	_ "impetus/internal/modules/disco"
	_ "impetus/internal/modules/ping"
	_ "impetus/internal/modules/version"
)

// Standard lists the modules every hosted domain runs, in provisioning order.
var Standard = []string{"disco", "ping", "version"}
