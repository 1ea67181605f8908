package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"impetus/internal/config"
	"impetus/internal/control"
	"impetus/internal/server"
)

const ctlUsage = `usage: impetus ctl [--socket PATH | --config FILE [--data DIR] | --data DIR] COMMAND [ARGS...]

commands:
  sessions                      list client sessions
  kick JID [CONDITION [TEXT]]   end a session (policy-violation by default)
  stats                         server statistics
  reopen [logs]                 reopen the xmpp_logger files
  reload                        reload the configuration
  help                          the server's own list of commands

The socket is --socket, else the control_socket of --config, else control.sock in the data
directory (--data, default ./data).
`

// ctl sends one command to a running server's control socket.
func ctl(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	socket := fs.String("socket", "", "control socket path")
	cfgPath := fs.String("config", "", "configuration file naming control_socket")
	dataDir := fs.String("data", "./data", "data directory")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait for the reply")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, ctlUsage)
		return 2
	}
	path := *socket
	if path == "" {
		path = filepath.Join(*dataDir, server.DefaultControlSocket)
		if *cfgPath != "" {
			cfg, _, err := config.Load(*cfgPath)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
			if cfg.XMPP != nil && cfg.XMPP.ControlSocket != "" {
				if strings.EqualFold(cfg.XMPP.ControlSocket, "none") {
					fmt.Fprintf(stderr, "impetus ctl: %s sets control_socket = \"none\"\n", *cfgPath)
					return 1
				}
				path = cfg.XMPP.ControlSocket
				if !filepath.IsAbs(path) {
					path = filepath.Join(*dataDir, path)
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := control.Call(ctx, path, fs.Arg(0), fs.Args()[1:]...)
	if err != nil {
		fmt.Fprintf(stderr, "impetus ctl: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, resp.Output)
	if !resp.OK {
		fmt.Fprintf(stderr, "impetus ctl: %s\n", resp.Error)
		return 1
	}
	return 0
}
