// Command pulumi-resource-command is a stand-in for the Pulumi "command"
// resource provider, used by the integration tests of gvisor-fleet.
//
// The upstream provider (module github.com/pulumi/pulumi-command/provider) is
// not available from the Go module proxy that this project's machines reach,
// so build-pulumi.sh builds this one instead. It speaks the same resource
// types and property names as pulumi-command 1.2.x, so that the unmodified
// `pulumi_command` Python package drives it:
//
//   - command:local:Command   create/update/delete, dir, environment,
//     interpreter, stdin, triggers, addPreviousOutputInEnv, logging
//   - command:remote:Command  the same over SSH (connection: host, port, user,
//     password, privateKey(+Password), agentSocketPath, dialErrorLimit,
//     perDialTimeout, proxy, hostKey); environment uses SSH Setenv and fails
//     when the server refuses it, like upstream
//   - command:remote:CopyToRemote  source asset or archive to remotePath over
//     SFTP; never deletes the remote copy
//
// Semantics follow upstream: nothing runs in preview; an input change runs
// `update` (or `create` again); delete runs the delete string stored by the
// last successful create/update; stdout/stderr lose one trailing newline.
// Not implemented (an error says so): local assetPaths/archivePaths, the
// local:run function and the deprecated remote:CopyFile resource.
package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "1.2.1"

const (
	typeLocalCommand  = "command:local:Command"
	typeRemoteCommand = "command:remote:Command"
	typeCopyToRemote  = "command:remote:CopyToRemote"
)

func main() {
	err := provider.Main("command", func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return plugin.NewProviderServer(&commandProvider{host: host}), nil
	})
	if err != nil {
		cmdutil.ExitError(err.Error())
	}
}

type commandProvider struct {
	plugin.UnimplementedProvider
	host *provider.HostClient
}

func (p *commandProvider) Close() error { return nil }

func (p *commandProvider) Pkg() string { return "command" }

func (p *commandProvider) GetPluginInfo(context.Context) (plugin.PluginInfo, error) {
	v, err := semver.ParseTolerant(version)
	if err != nil {
		return plugin.PluginInfo{}, err
	}
	return plugin.PluginInfo{Version: &v}, nil
}

func (p *commandProvider) SignalCancellation(context.Context) error { return nil }

func (p *commandProvider) GetSchema(context.Context, plugin.GetSchemaRequest) (plugin.GetSchemaResponse, error) {
	return plugin.GetSchemaResponse{Schema: []byte(`{"name":"command","version":"` + version + `"}`)}, nil
}

func (p *commandProvider) CheckConfig(_ context.Context, req plugin.CheckConfigRequest,
) (plugin.CheckConfigResponse, error) {
	return plugin.CheckConfigResponse{Properties: req.News}, nil
}

func (p *commandProvider) DiffConfig(context.Context, plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	return plugin.DiffConfigResponse{Changes: plugin.DiffNone}, nil
}

func (p *commandProvider) Configure(context.Context, plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	return plugin.ConfigureResponse{}, nil
}

func knownType(t string) error {
	switch t {
	case typeLocalCommand, typeRemoteCommand, typeCopyToRemote:
		return nil
	}
	return fmt.Errorf("unknown resource type %q (this stand-in provider supports %s, %s, %s)",
		t, typeLocalCommand, typeRemoteCommand, typeCopyToRemote)
}

func (p *commandProvider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	if err := knownType(string(req.Type)); err != nil {
		return plugin.CheckResponse{}, err
	}
	news := req.News.Copy()
	var failures []plugin.CheckFailure
	fail := func(prop, reason string) {
		failures = append(failures, plugin.CheckFailure{Property: resource.PropertyKey(prop), Reason: reason})
	}
	switch string(req.Type) {
	case typeLocalCommand:
		for _, k := range []string{"assetPaths", "archivePaths"} {
			if v, ok := news[resource.PropertyKey(k)]; ok && !v.IsNull() {
				fail(k, k+" is not supported by this stand-in provider")
			}
		}
	case typeRemoteCommand, typeCopyToRemote:
		if v, ok := news["connection"]; !ok || v.IsNull() {
			fail("connection", "missing required property 'connection'")
		}
		if string(req.Type) == typeCopyToRemote {
			for _, k := range []string{"source", "remotePath"} {
				if v, ok := news[resource.PropertyKey(k)]; !ok || v.IsNull() {
					fail(k, "missing required property '"+k+"'")
				}
			}
		}
	}
	return plugin.CheckResponse{Properties: news, Failures: failures}, nil
}

// inputKeys lists the input properties of each resource type.
var inputKeys = map[string][]string{
	typeLocalCommand: {
		"addPreviousOutputInEnv", "archivePaths", "assetPaths", "create", "delete", "dir",
		"environment", "interpreter", "logging", "stdin", "triggers", "update",
	},
	typeRemoteCommand: {
		"addPreviousOutputInEnv", "connection", "create", "delete", "environment", "logging",
		"stdin", "triggers", "update",
	},
	typeCopyToRemote: {"connection", "remotePath", "source", "triggers"},
}

func (p *commandProvider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	detailed := map[string]plugin.PropertyDiff{}
	var changed, replace []resource.PropertyKey
	for _, k := range inputKeys[string(req.Type)] {
		key := resource.PropertyKey(k)
		oldV, hadOld := req.OldInputs[key]
		newV, hasNew := req.NewInputs[key]
		if hadOld && oldV.IsNull() {
			hadOld = false
		}
		if hasNew && newV.IsNull() {
			hasNew = false
		}
		if !hadOld && !hasNew {
			continue
		}
		if hadOld && hasNew && !newV.ContainsUnknowns() && unwrap(oldV).DeepEquals(unwrap(newV)) {
			continue
		}
		kind := plugin.DiffUpdate
		switch {
		case !hadOld:
			kind = plugin.DiffAdd
		case !hasNew:
			kind = plugin.DiffDelete
		}
		if k == "triggers" {
			kind = kind.AsReplace()
			replace = append(replace, key)
		}
		detailed[k] = plugin.PropertyDiff{Kind: kind, InputDiff: true}
		changed = append(changed, key)
	}
	if len(changed) == 0 {
		return plugin.DiffResponse{Changes: plugin.DiffNone}, nil
	}
	return plugin.DiffResponse{
		Changes: plugin.DiffSome, ChangedKeys: changed, ReplaceKeys: replace, DetailedDiff: detailed,
	}, nil
}

func (p *commandProvider) Create(ctx context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	if err := knownType(string(req.Type)); err != nil {
		return plugin.CreateResponse{}, err
	}
	id, err := resource.NewUniqueHexID(req.Name, 8, 0)
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	state := req.Properties.Copy()
	if string(req.Type) == typeCopyToRemote {
		if !req.Preview {
			if err := p.copyToRemote(ctx, req.URN, req.Properties); err != nil {
				return plugin.CreateResponse{}, err
			}
		}
		return plugin.CreateResponse{ID: id, Properties: state, Status: resource.StatusOK}, nil
	}
	if req.Preview {
		state["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
		state["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
		return plugin.CreateResponse{ID: id, Properties: state, Status: resource.StatusOK}, nil
	}
	state["stdout"] = resource.NewStringProperty("")
	state["stderr"] = resource.NewStringProperty("")
	if cmd := getString(req.Properties, "create"); cmd != "" {
		stdout, stderr, err := p.run(ctx, req.URN, string(req.Type), req.Properties, nil, cmd)
		if err != nil {
			return plugin.CreateResponse{}, err
		}
		state["stdout"] = resource.NewStringProperty(stdout)
		state["stderr"] = resource.NewStringProperty(stderr)
	}
	return plugin.CreateResponse{ID: id, Properties: state, Status: resource.StatusOK}, nil
}

func (p *commandProvider) Update(ctx context.Context, req plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	state := req.NewInputs.Copy()
	if string(req.Type) == typeCopyToRemote {
		if !req.Preview {
			if err := p.copyToRemote(ctx, req.URN, req.NewInputs); err != nil {
				return plugin.UpdateResponse{}, err
			}
		}
		return plugin.UpdateResponse{Properties: state, Status: resource.StatusOK}, nil
	}
	if req.Preview {
		state["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
		state["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
		return plugin.UpdateResponse{Properties: state, Status: resource.StatusOK}, nil
	}
	state["stdout"] = outputOr(req.OldOutputs, "stdout")
	state["stderr"] = outputOr(req.OldOutputs, "stderr")
	cmd := getString(req.NewInputs, "update")
	if cmd == "" {
		cmd = getString(req.NewInputs, "create")
	}
	if cmd != "" {
		stdout, stderr, err := p.run(ctx, req.URN, string(req.Type), req.NewInputs, req.OldOutputs, cmd)
		if err != nil {
			return plugin.UpdateResponse{}, err
		}
		state["stdout"] = resource.NewStringProperty(stdout)
		state["stderr"] = resource.NewStringProperty(stderr)
	}
	return plugin.UpdateResponse{Properties: state, Status: resource.StatusOK}, nil
}

func (p *commandProvider) Delete(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	if string(req.Type) == typeCopyToRemote {
		return plugin.DeleteResponse{Status: resource.StatusOK}, nil
	}
	// The delete command and its environment come from the stored state: the
	// inputs of the last successful create/update.
	if cmd := getString(req.Outputs, "delete"); cmd != "" {
		if _, _, err := p.run(ctx, req.URN, string(req.Type), req.Outputs, req.Outputs, cmd); err != nil {
			return plugin.DeleteResponse{Status: resource.StatusOK}, err
		}
	}
	return plugin.DeleteResponse{Status: resource.StatusOK}, nil
}

func (p *commandProvider) Read(_ context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	return plugin.ReadResponse{
		ReadResult: plugin.ReadResult{ID: req.ID, Inputs: req.Inputs, Outputs: req.State},
		Status:     resource.StatusOK,
	}, nil
}

func (p *commandProvider) Invoke(_ context.Context, req plugin.InvokeRequest) (plugin.InvokeResponse, error) {
	return plugin.InvokeResponse{}, fmt.Errorf("function %s is not supported by this stand-in provider", req.Tok)
}

// run runs cmd for a local or remote Command. prev holds the previous
// outputs (stdout/stderr) that addPreviousOutputInEnv passes on.
func (p *commandProvider) run(ctx context.Context, urn resource.URN, typ string,
	props, prev resource.PropertyMap, cmd string,
) (string, string, error) {
	env := getStringMap(props, "environment")
	var prevOut, prevErr string
	if v, ok := props["addPreviousOutputInEnv"]; !ok || unwrap(v).IsNull() || !unwrap(v).IsBool() ||
		unwrap(v).BoolValue() {
		prevOut, prevErr = getString(prev, "stdout"), getString(prev, "stderr")
	}
	lg := newLogger(ctx, p.host, urn, getString(props, "logging"))
	if typ == typeLocalCommand {
		return runLocal(ctx, props, env, prevOut, prevErr, cmd, lg)
	}
	conn, err := parseConnection(props["connection"])
	if err != nil {
		return "", "", err
	}
	return runRemote(ctx, conn, env, prevOut, prevErr, getString(props, "stdin"), cmd, lg)
}

// --- property helpers ---

func unwrap(v resource.PropertyValue) resource.PropertyValue {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	if v.IsOutput() {
		v = v.OutputValue().Element
	}
	return v
}

func getString(m resource.PropertyMap, key string) string {
	if m == nil {
		return ""
	}
	v, ok := m[resource.PropertyKey(key)]
	if !ok {
		return ""
	}
	v = unwrap(v)
	if v.IsString() {
		return v.StringValue()
	}
	return ""
}

func outputOr(m resource.PropertyMap, key string) resource.PropertyValue {
	return resource.NewStringProperty(getString(m, key))
}

func getStringMap(m resource.PropertyMap, key string) map[string]string {
	out := map[string]string{}
	v, ok := m[resource.PropertyKey(key)]
	if !ok {
		return out
	}
	v = unwrap(v)
	if !v.IsObject() {
		return out
	}
	for k, e := range v.ObjectValue() {
		if e = unwrap(e); e.IsString() {
			out[string(k)] = e.StringValue()
		}
	}
	return out
}

func getStringList(m resource.PropertyMap, key string) []string {
	v, ok := m[resource.PropertyKey(key)]
	if !ok {
		return nil
	}
	v = unwrap(v)
	if !v.IsArray() {
		return nil
	}
	var out []string
	for _, e := range v.ArrayValue() {
		if e = unwrap(e); e.IsString() {
			out = append(out, e.StringValue())
		}
	}
	return out
}

// sortedEnv returns KEY=VALUE pairs in a stable order.
func sortedEnv(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func trimNL(s string) string { return strings.TrimSuffix(s, "\n") }
