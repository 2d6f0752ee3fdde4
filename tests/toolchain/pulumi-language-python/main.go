// Command pulumi-language-python is a small Python language host for the
// Pulumi engine, used by the integration tests of gvisor-fleet.
//
// The upstream host (module
// github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) is not
// available from the Go module proxy that this project's machines reach, so
// build-pulumi.sh builds this one instead. It does what a test run needs:
// it runs the program with the upstream `pulumi-language-python-exec` shim
// (shipped in the sdk/v3 module and installed next to this binary) inside the
// virtualenv named in Pulumi.yaml, reports the plugins that the installed
// Pulumi packages need (their pulumi-plugin.json files), and installs
// dependencies through the sdk's python toolchain package.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.0.0-dev"

const (
	execScriptName = "pulumi-language-python-exec"
	// Exit code with which the exec shim says it has already shown an error.
	bailExitCode = 32
)

// Lists the pulumi-plugin.json files of the packages importable by the
// program's interpreter (one absolute path a line).
const listPluginFilesScript = `
import os, sys
seen = set()
for entry in sys.path:
    try:
        names = sorted(os.listdir(entry or "."))
    except OSError:
        continue
    for name in names:
        f = os.path.abspath(os.path.join(entry or ".", name, "pulumi-plugin.json"))
        if f not in seen and os.path.isfile(f):
            seen.add(f)
            print(f)
`

func main() {
	tracing := flag.String("tracing", "", "emit tracing to a Zipkin-compatible endpoint")
	root := flag.String("root", "", "project root directory")
	virtualenv := flag.String("virtualenv", "", "virtualenv to use, relative to the project root")
	tc := flag.String("toolchain", "", "python toolchain: pip, poetry or uv")
	executor := flag.String("use-executor", "", "use this exec script instead of the one next to this binary")
	flag.String("typechecker", "", "accepted for compatibility; not supported")
	flag.Parse()
	logging.InitLogging(false, 0, false)

	execScript := *executor
	if execScript == "" {
		self, err := os.Executable()
		if err != nil {
			cmdutil.Exit(fmt.Errorf("locating this executable: %w", err))
		}
		execScript = filepath.Join(filepath.Dir(self), execScriptName)
	}
	if _, err := os.Stat(execScript); err != nil {
		cmdutil.Exit(fmt.Errorf("missing %s: %w", execScriptName, err))
	}

	h := &host{
		execScript: execScript,
		tracing:    *tracing,
		flagOpts:   map[string]string{"virtualenv": *virtualenv, "toolchain": *tc},
		root:       *root,
	}
	if args := flag.Args(); len(args) > 0 {
		h.engineAddress = args[0]
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("starting the language host: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host stopped: %w", err))
	}
}

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	execScript string
	tracing    string
	flagOpts   map[string]string

	mu            sync.Mutex
	engineAddress string
	root          string
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.engineAddress = req.GetEngineAddress()
	if req.RootDirectory != nil {
		h.root = req.GetRootDirectory()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// toolchainFor resolves the python toolchain for a program from its runtime
// options (Pulumi.yaml `runtime.options`), falling back to command-line flags.
func (h *host) toolchainFor(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts := map[string]string{}
	for k, v := range h.flagOpts {
		if v != "" {
			opts[k] = v
		}
	}
	if info != nil && info.GetOptions() != nil {
		for k, v := range info.GetOptions().GetFields() {
			if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
				opts[k] = s.StringValue
			}
		}
	}
	if tc := opts["typechecker"]; tc != "" && tc != "none" {
		return nil, fmt.Errorf("runtime option typechecker=%q is not supported by this language host", tc)
	}
	h.mu.Lock()
	root := h.root
	h.mu.Unlock()
	programDir := ""
	if info != nil {
		if info.GetRootDirectory() != "" {
			root = info.GetRootDirectory()
		}
		programDir = info.GetProgramDirectory()
	}
	if programDir == "" {
		programDir = root
	}
	po := toolchain.PythonOptions{Root: root, ProgramDir: programDir, Virtualenv: opts["virtualenv"]}
	switch opts["toolchain"] {
	case "", "pip":
		po.Toolchain = toolchain.Pip
	case "poetry":
		po.Toolchain = toolchain.Poetry
	case "uv":
		po.Toolchain = toolchain.Uv
	default:
		return nil, fmt.Errorf("unknown python toolchain %q", opts["toolchain"])
	}
	return toolchain.ResolveToolchain(po)
}

// pluginFiles returns the pulumi-plugin.json files of the installed packages.
func (h *host) pluginFiles(ctx context.Context, info *pulumirpc.ProgramInfo) ([]string, error) {
	tc, err := h.toolchainFor(info)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", listPluginFilesScript)
	if err != nil {
		return nil, err
	}
	if info != nil && info.GetProgramDirectory() != "" {
		cmd.Dir = info.GetProgramDirectory()
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing installed Pulumi packages: %w", err)
	}
	var files []string
	for _, line := range strings.Split(string(out), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			files = append(files, line)
		}
	}
	return files, nil
}

func (h *host) requiredPackages(ctx context.Context, info *pulumirpc.ProgramInfo,
) ([]*pulumirpc.PackageDependency, error) {
	files, err := h.pluginFiles(ctx, info)
	if err != nil {
		return nil, err
	}
	var deps []*pulumirpc.PackageDependency
	for _, f := range files {
		pj, err := plugin.LoadPulumiPluginJSON(f)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		if !pj.Resource || pj.Name == "" || pj.Version == "" {
			continue
		}
		dep := &pulumirpc.PackageDependency{
			Kind:    "resource",
			Name:    pj.Name,
			Version: "v" + strings.TrimPrefix(pj.Version, "v"),
			Server:  pj.Server,
		}
		if p := pj.Parameterization; p != nil {
			dep.Parameterization = &pulumirpc.PackageParameterization{
				Name: p.Name, Version: p.Version, Value: p.Value,
			}
		}
		deps = append(deps, dep)
	}
	return deps, nil
}

func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := h.requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: deps}, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := h.requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	var plugins []*pulumirpc.PluginDependency
	for _, d := range deps {
		if d.Parameterization != nil {
			continue
		}
		plugins = append(plugins, &pulumirpc.PluginDependency{
			Name: d.Name, Kind: d.Kind, Version: d.Version, Server: d.Server,
		})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, err := h.toolchainFor(req.GetInfo())
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	h.mu.Lock()
	engine := h.engineAddress
	h.mu.Unlock()
	args := []string{"-u", h.execScript}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", engine)
	add("project", req.GetProject())
	if info := req.GetInfo(); info != nil {
		add("root_directory", info.GetRootDirectory())
	}
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	if req.GetDryRun() {
		add("dry_run", "true")
	}
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("tracing", h.tracing)
	add("organization", req.GetOrganization())
	program := req.GetProgram()
	if info := req.GetInfo(); info != nil && info.GetEntryPoint() != "" {
		program = info.GetEntryPoint()
	}
	if program == "" {
		program = "."
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env,
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON),
	)
	if req.GetPwd() != "" {
		cmd.Dir = req.GetPwd()
	}
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == bailExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err),
		}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// streamWriter forwards install output to the engine.
type streamWriter struct {
	mu     *sync.Mutex
	server pulumirpc.LanguageRuntime_InstallDependenciesServer
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := append([]byte(nil), p...)
	resp := &pulumirpc.InstallDependenciesResponse{Stdout: b}
	if w.stderr {
		resp = &pulumirpc.InstallDependenciesResponse{Stderr: b}
	}
	if err := w.server.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	tc, err := h.toolchainFor(req.GetInfo())
	if err != nil {
		return err
	}
	dir := req.GetDirectory()
	if info := req.GetInfo(); info != nil && info.GetProgramDirectory() != "" {
		dir = info.GetProgramDirectory()
	}
	var mu sync.Mutex
	out := streamWriter{mu: &mu, server: server}
	errOut := streamWriter{mu: &mu, server: server, stderr: true}
	return tc.InstallDependencies(server.Context(), dir, req.GetUseLanguageVersionTools(),
		true /*showOutput*/, out, errOut)
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := h.toolchainFor(req.GetInfo())
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: info.PythonExecutable,
		Version:    info.PythonVersion.String(),
	}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := h.toolchainFor(req.GetInfo())
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, p := range pkgs {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return resp, nil
}

func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) GenerateProject(context.Context, *pulumirpc.GenerateProjectRequest,
) (*pulumirpc.GenerateProjectResponse, error) {
	return nil, status.Error(codes.Unimplemented, "code generation is not supported by this language host")
}
