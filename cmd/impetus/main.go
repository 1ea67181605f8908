// Command impetus is the Impetus XMPP server and its administration tool.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"impetus/internal/auth"
	"impetus/internal/config"
	"impetus/internal/modules/version"
	"impetus/internal/momentum"
	"impetus/internal/server"
	"impetus/internal/storage"
)

const usage = `usage: impetus <command> [arguments]

commands:
  serve --config FILE [--data DIR]   run the server (data directory defaults to ./data)
  config check FILE                  validate a configuration and print the effective one
  ctl COMMAND [ARGS...]              talk to a running server: sessions, kick, stats, reopen, reload
  passwd add|set|delete|list ...     manage Momentum password files (file:// and digest://)
  import-rosters --config FILE [--data DIR] ROSTER.json...
                                     import Momentum roster documents into storage
  version                            print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "config":
		if len(args) != 3 || args[1] != "check" {
			fmt.Fprint(stderr, "usage: impetus config check FILE\n")
			return 2
		}
		return configCheck(args[2], stdout, stderr)
	case "ctl":
		return ctl(args[1:], stdout, stderr)
	case "passwd":
		return auth.RunPasswd(args[1:], stdin, stdout, stderr)
	case "import-rosters":
		return importRosters(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "%s %s\n", version.Name, version.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "impetus: unknown command %q\n%s", args[0], usage)
	return 2
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (Momentum syntax)")
	dataDir := fs.String("data", "./data", "data directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || fs.NArg() != 0 {
		fmt.Fprint(stderr, "usage: impetus serve --config FILE [--data DIR]\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := server.Run(ctx, server.Options{ConfigPath: *cfgPath, DataDir: *dataDir, LogOutput: stderr}); err != nil {
		var cerr config.ErrorList
		if errors.As(err, &cerr) {
			for _, e := range cerr {
				fmt.Fprintln(stderr, e)
			}
		} else {
			fmt.Fprintf(stderr, "impetus: %v\n", err)
		}
		return 1
	}
	return 0
}

func configCheck(path string, stdout, stderr io.Writer) int {
	cfg, warnings, err := server.LoadConfig(path)
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprint(stdout, cfg.Dump())
	return 0
}

// importRosters loads Momentum roster JSON into the storage the configuration names.
func importRosters(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("import-rosters", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file naming the storage")
	dataDir := fs.String("data", "./data", "data directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || fs.NArg() == 0 {
		fmt.Fprint(stderr, "usage: impetus import-rosters --config FILE [--data DIR] ROSTER.json...\n")
		return 2
	}
	cfg, _, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ds := cfg.Storage(*dataDir)
	if err := os.MkdirAll(*dataDir, 0o750); err != nil {
		fmt.Fprintf(stderr, "impetus: %v\n", err)
		return 1
	}
	backend, err := storage.Open(ds.Driver, ds.DSN)
	if err != nil {
		fmt.Fprintf(stderr, "impetus: storage: %v\n", err)
		return 1
	}
	defer backend.Close()
	n, err := momentum.ImportRosters(context.Background(), backend, fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "impetus: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "imported %d roster items\n", n)
	return 0
}
