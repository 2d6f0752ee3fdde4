package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// connection mirrors command:remote:Connection / ProxyConnection.
type connection struct {
	host               string
	port               int
	user               string
	password           string
	privateKey         string
	privateKeyPassword string
	agentSocketPath    string
	dialErrorLimit     int
	perDialTimeout     time.Duration
	hostKey            string
	proxy              *connection
}

func parseConnection(v resource.PropertyValue) (*connection, error) {
	v = unwrap(v)
	if !v.IsObject() {
		return nil, errors.New("connection must be an object")
	}
	m := v.ObjectValue()
	c := &connection{
		host:               getString(m, "host"),
		port:               getInt(m, "port", 22),
		user:               getString(m, "user"),
		password:           getString(m, "password"),
		privateKey:         getString(m, "privateKey"),
		privateKeyPassword: getString(m, "privateKeyPassword"),
		agentSocketPath:    getString(m, "agentSocketPath"),
		dialErrorLimit:     getInt(m, "dialErrorLimit", 10),
		perDialTimeout:     time.Duration(getInt(m, "perDialTimeout", 15)) * time.Second,
		hostKey:            getString(m, "hostKey"),
	}
	if c.host == "" {
		return nil, errors.New("connection.host is required")
	}
	if c.user == "" {
		c.user = "root"
	}
	if p, ok := m["proxy"]; ok && !unwrap(p).IsNull() {
		proxy, err := parseConnection(p)
		if err != nil {
			return nil, fmt.Errorf("connection.proxy: %w", err)
		}
		c.proxy = proxy
	}
	return c, nil
}

func getInt(m resource.PropertyMap, key string, def int) int {
	v, ok := m[resource.PropertyKey(key)]
	if !ok {
		return def
	}
	v = unwrap(v)
	switch {
	case v.IsNumber():
		return int(v.NumberValue())
	case v.IsString():
		if n, err := strconv.Atoi(v.StringValue()); err == nil {
			return n
		}
	}
	return def
}

func (c *connection) addr() string { return net.JoinHostPort(c.host, strconv.Itoa(c.port)) }

func (c *connection) clientConfig() (*ssh.ClientConfig, error) {
	var auth []ssh.AuthMethod
	if c.privateKey != "" {
		var signer ssh.Signer
		var err error
		if c.privateKeyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(c.privateKey), []byte(c.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(c.privateKey))
		}
		if err != nil {
			return nil, fmt.Errorf("parsing private key: %w", err)
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if c.password != "" {
		pw := c.password
		auth = append(auth, ssh.Password(pw), ssh.KeyboardInteractive(
			func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	sock := c.agentSocketPath
	if sock == "" {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			auth = append(auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		} else if c.agentSocketPath != "" {
			return nil, fmt.Errorf("connecting to SSH agent at %s: %w", sock, err)
		}
	}
	hostKeyCallback := ssh.InsecureIgnoreHostKey() //nolint:gosec // same default as upstream
	if c.hostKey != "" {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.hostKey))
		if err != nil {
			return nil, fmt.Errorf("parsing hostKey: %w", err)
		}
		hostKeyCallback = ssh.FixedHostKey(pk)
	}
	return &ssh.ClientConfig{
		User:            c.user,
		Auth:            auth,
		HostKeyCallback: hostKeyCallback,
		Timeout:         c.perDialTimeout,
	}, nil
}

// retry calls dial until it succeeds or dialErrorLimit failures happened
// (-1: no limit), backing off between attempts.
func retry[T any](ctx context.Context, c *connection, lg *logger, what string, dial func() (T, error)) (T, error) {
	delay := time.Second
	for failures := 0; ; {
		v, err := dial()
		if err == nil {
			return v, nil
		}
		failures++
		if c.dialErrorLimit >= 0 && failures >= c.dialErrorLimit {
			var zero T
			return zero, fmt.Errorf("failed to dial %s after %d attempts: %w", what, failures, err)
		}
		if lg != nil && lg.host != nil {
			_ = lg.host.LogStatus(ctx, diag.Info, lg.urn,
				fmt.Sprintf("dial %s: attempt %d failed: %v", what, failures, err))
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		case <-time.After(delay):
		}
		if delay = delay * 3 / 2; delay > 10*time.Second {
			delay = 10 * time.Second
		}
	}
}

func (c *connection) dial(ctx context.Context, lg *logger) (*ssh.Client, error) {
	config, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	if c.proxy == nil {
		return retry(ctx, c, lg, c.addr(), func() (*ssh.Client, error) {
			return ssh.Dial("tcp", c.addr(), config)
		})
	}
	proxyConfig, err := c.proxy.clientConfig()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	proxyClient, err := retry(ctx, c.proxy, lg, "proxy "+c.proxy.addr(), func() (*ssh.Client, error) {
		return ssh.Dial("tcp", c.proxy.addr(), proxyConfig)
	})
	if err != nil {
		return nil, err
	}
	client, err := retry(ctx, c, lg, c.addr()+" via proxy", func() (*ssh.Client, error) {
		conn, err := proxyClient.Dial("tcp", c.addr())
		if err != nil {
			return nil, err
		}
		cc, chans, reqs, err := ssh.NewClientConn(conn, c.addr(), config)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		return ssh.NewClient(cc, chans, reqs), nil
	})
	if err != nil {
		_ = proxyClient.Close()
		return nil, err
	}
	return client, nil
}

func runRemote(ctx context.Context, conn *connection, env map[string]string, prevOut, prevErr, stdin, cmdline string,
	lg *logger,
) (string, string, error) {
	client, err := conn.dial(ctx, lg)
	if err != nil {
		return "", "", err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return "", "", err
	}
	defer session.Close()

	for _, kv := range sortedEnv(env) {
		k, v, _ := strings.Cut(kv, "=")
		if err := session.Setenv(k, v); err != nil {
			return "", "", fmt.Errorf("unable to set environment variable %q on the remote host "+
				"(is it listed in sshd's AcceptEnv?): %w", k, err)
		}
	}
	// Like upstream: the previous outputs are passed optimistically; a
	// refusal only warns.
	for k, v := range map[string]string{envPrevStdout: prevOut, envPrevStderr: prevErr} {
		if v == "" {
			continue
		}
		if err := session.Setenv(k, v); err != nil && lg.host != nil {
			_ = lg.host.Log(ctx, diag.Warning, lg.urn,
				fmt.Sprintf("could not set %s on the remote host: %v", k, err))
		}
	}
	if stdin != "" {
		session.Stdin = strings.NewReader(stdin)
	}
	c := newCapture(lg)
	session.Stdout = c.stdoutWriter()
	session.Stderr = c.stderrWriter()
	err = session.Run(cmdline)
	c.wait()
	if err != nil {
		return "", "", fmt.Errorf("%w: running %q:\n%s", err, cmdline, c.both.String())
	}
	return trimNL(c.stdout.String()), trimNL(c.stderr.String()), nil
}

// copyToRemote implements command:remote:CopyToRemote.
func (p *commandProvider) copyToRemote(ctx context.Context, urn resource.URN, props resource.PropertyMap) error {
	conn, err := parseConnection(props["connection"])
	if err != nil {
		return err
	}
	remotePath := getString(props, "remotePath")
	if remotePath == "" {
		return errors.New("remotePath is required")
	}
	source := unwrap(props["source"])
	lg := newLogger(ctx, p.host, urn, "none")
	client, err := conn.dial(ctx, lg)
	if err != nil {
		return err
	}
	defer client.Close()
	sc, err := sftp.NewClient(client)
	if err != nil {
		return fmt.Errorf("starting SFTP: %w", err)
	}
	defer sc.Close()

	remoteIsDir := false
	if fi, err := sc.Stat(remotePath); err == nil && fi.IsDir() {
		remoteIsDir = true
	}

	switch {
	case source.IsAsset():
		a := source.AssetValue()
		dest := remotePath
		if remoteIsDir {
			if !a.IsPath() {
				return fmt.Errorf("remotePath %s is a directory and the asset has no file name", remotePath)
			}
			dest = path.Join(remotePath, filepath.Base(a.Path))
		}
		blob, err := a.Read()
		if err != nil {
			return fmt.Errorf("reading source asset: %w", err)
		}
		defer blob.Close()
		mode := os.FileMode(0o644)
		if a.IsPath() {
			if fi, err := os.Stat(a.Path); err == nil {
				mode = fi.Mode().Perm()
			}
		}
		return putFile(sc, dest, blob, mode)
	case source.IsArchive():
		ar := source.ArchiveValue()
		dest := remotePath
		if remoteIsDir && ar.IsPath() {
			dest = path.Join(remotePath, filepath.Base(filepath.Clean(ar.Path)))
		}
		if err := sc.MkdirAll(dest); err != nil {
			return fmt.Errorf("creating %s: %w", dest, err)
		}
		rd, err := ar.Open()
		if err != nil {
			return fmt.Errorf("opening source archive: %w", err)
		}
		defer rd.Close()
		for {
			name, blob, err := rd.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading source archive: %w", err)
			}
			mode := os.FileMode(0o644)
			if ar.IsPath() {
				if fi, err := os.Stat(filepath.Join(ar.Path, filepath.FromSlash(name))); err == nil {
					mode = fi.Mode().Perm()
				}
			}
			target := path.Join(dest, name)
			if err := sc.MkdirAll(path.Dir(target)); err != nil {
				return fmt.Errorf("creating %s: %w", path.Dir(target), err)
			}
			err = putFile(sc, target, blob, mode)
			_ = blob.Close()
			if err != nil {
				return err
			}
		}
	default:
		return errors.New("source must be an asset or an archive")
	}
}

func putFile(sc *sftp.Client, dest string, r io.Reader, mode os.FileMode) error {
	f, err := sc.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("opening remote file %s: %w", dest, err)
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing remote file %s: %w", dest, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing remote file %s: %w", dest, err)
	}
	if err := sc.Chmod(dest, mode); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", dest, err)
	}
	return nil
}
