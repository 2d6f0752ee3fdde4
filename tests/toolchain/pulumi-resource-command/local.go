package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
)

const (
	envPrevStdout = "PULUMI_COMMAND_STDOUT"
	envPrevStderr = "PULUMI_COMMAND_STDERR"
)

// logger streams command output to the engine as status messages, filtered
// by the resource's `logging` input (stdout, stderr, stdoutAndStderr, none).
type logger struct {
	ctx    context.Context
	host   *provider.HostClient
	urn    resource.URN
	stdout bool
	stderr bool
	mu     sync.Mutex
}

func newLogger(ctx context.Context, host *provider.HostClient, urn resource.URN, mode string) *logger {
	l := &logger{ctx: ctx, host: host, urn: urn, stdout: true, stderr: true}
	switch mode {
	case "stdout":
		l.stderr = false
	case "stderr":
		l.stdout = false
	case "none":
		l.stdout, l.stderr = false, false
	}
	return l
}

// writer returns a writer that logs complete lines; call the returned
// function after the command ends to flush and wait.
func (l *logger) writer(enabled bool) (io.WriteCloser, func()) {
	r, w := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for sc.Scan() {
			if enabled && l.host != nil {
				l.mu.Lock()
				_ = l.host.LogStatus(l.ctx, diag.Info, l.urn, sc.Text())
				l.mu.Unlock()
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	return w, func() { _ = w.Close(); <-done }
}

// capture wires stdout/stderr buffers plus the logger; wait must be called
// after the command ends.
type capture struct {
	stdout, stderr, both bytes.Buffer
	mu                   sync.Mutex
	outW, errW           io.WriteCloser
	waitOut, waitErr     func()
}

type lockedWriter struct {
	mu *sync.Mutex
	ws []io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range w.ws {
		if _, err := x.Write(p); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func newCapture(l *logger) *capture {
	c := &capture{}
	c.outW, c.waitOut = l.writer(l.stdout)
	c.errW, c.waitErr = l.writer(l.stderr)
	return c
}

func (c *capture) stdoutWriter() io.Writer {
	return lockedWriter{mu: &c.mu, ws: []io.Writer{&c.stdout, &c.both, c.outW}}
}

func (c *capture) stderrWriter() io.Writer {
	return lockedWriter{mu: &c.mu, ws: []io.Writer{&c.stderr, &c.both, c.errW}}
}

func (c *capture) wait() { c.waitOut(); c.waitErr() }

func runLocal(ctx context.Context, props resource.PropertyMap, env map[string]string,
	prevOut, prevErr, cmdline string, lg *logger,
) (string, string, error) {
	interpreter := getStringList(props, "interpreter")
	if len(interpreter) == 0 {
		interpreter = []string{"/bin/sh", "-c"}
	}
	args := append(append([]string{}, interpreter[1:]...), cmdline)
	cmd := exec.CommandContext(ctx, interpreter[0], args...)
	cmd.Env = os.Environ()
	if prevOut != "" {
		cmd.Env = append(cmd.Env, envPrevStdout+"="+prevOut)
	}
	if prevErr != "" {
		cmd.Env = append(cmd.Env, envPrevStderr+"="+prevErr)
	}
	cmd.Env = append(cmd.Env, sortedEnv(env)...)
	if dir := getString(props, "dir"); dir != "" {
		cmd.Dir = dir
	}
	if stdin := getString(props, "stdin"); stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	c := newCapture(lg)
	cmd.Stdout = c.stdoutWriter()
	cmd.Stderr = c.stderrWriter()
	err := cmd.Run()
	c.wait()
	if err != nil {
		return "", "", fmt.Errorf("%w: running %q:\n%s", err, cmdline, c.both.String())
	}
	return trimNL(c.stdout.String()), trimNL(c.stderr.String()), nil
}
