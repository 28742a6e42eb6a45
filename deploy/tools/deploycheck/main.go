// deploycheck: the checks of scripts/check-deploy.sh that need Go libraries.
//
//	deploycheck crd FILE...   strict-decode every monitoring.coreos.com/v1 ServiceMonitor and
//	                          PrometheusRule in FILEs (multi-document YAML; "-" = stdin)
//	                          into the Prometheus Operator's own API types, as the API
//	                          server's strict field validation would (unknown or duplicate
//	                          fields, wrong types), plus the CRDs' required fields and
//	                          duration patterns. kubeconform has no schema for these kinds
//	                          offline; this is what stands in for it.
//	deploycheck compose FILE  load a compose file the way `docker compose config` does
//	                          (compose-go, with the compose-spec JSON schema), and check
//	                          that bind-mount sources, build contexts and Dockerfiles exist.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: deploycheck crd FILE... | deploycheck compose FILE")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "crd":
		err = checkCRDs(os.Args[2:])
	case "compose":
		err = checkCompose(os.Args[2])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploycheck:", err)
		os.Exit(1)
	}
}

// Patterns of the CRDs (monitoring.coreos.com_*.yaml) for these fields.
var (
	durationRe = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)
	portNameRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

type meta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func checkCRDs(files []string) error {
	var problems []string
	counts := map[string]int{}
	for _, f := range files {
		var r io.Reader
		if f == "-" {
			r = os.Stdin
		} else {
			fh, err := os.Open(f)
			if err != nil {
				return err
			}
			defer fh.Close()
			r = fh
		}
		docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
		for n := 1; ; n++ {
			doc, err := docs.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("%s: document %d: %w", f, n, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			js, err := yaml.YAMLToJSONStrict(doc)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: document %d: %v", f, n, err))
				continue
			}
			var m meta
			if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &m); err != nil {
				problems = append(problems, fmt.Sprintf("%s: document %d: %v", f, n, err))
				continue
			}
			if m.APIVersion != "monitoring.coreos.com/v1" {
				continue
			}
			where := fmt.Sprintf("%s: %s/%s", f, m.Kind, m.Metadata.Name)
			var errs []string
			switch m.Kind {
			case "ServiceMonitor":
				var sm monv1.ServiceMonitor
				errs = strict(js, &sm)
				if len(errs) == 0 {
					errs = checkServiceMonitor(&sm)
				}
			case "PrometheusRule":
				var pr monv1.PrometheusRule
				errs = strict(js, &pr)
				if len(errs) == 0 {
					errs = checkPrometheusRule(&pr)
				}
			default:
				errs = []string{"kind not checked by deploycheck"}
			}
			if m.Metadata.Name == "" {
				errs = append(errs, "metadata.name is empty")
			}
			for _, e := range errs {
				problems = append(problems, where+": "+e)
			}
			if len(errs) == 0 {
				counts[m.Kind]++
				fmt.Printf("  ok %s\n", where)
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	if counts["ServiceMonitor"]+counts["PrometheusRule"] == 0 {
		return errors.New("no ServiceMonitor or PrometheusRule found")
	}
	fmt.Printf("deploycheck crd: %d ServiceMonitor, %d PrometheusRule valid\n", counts["ServiceMonitor"], counts["PrometheusRule"])
	return nil
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' && string(t) != "---" {
			out = append(out, l...)
			out = append(out, '\n')
		}
	}
	return out
}

// strict decodes like the API server's strict field validation: case-sensitive field
// names, no unknown fields, no duplicates.
func strict(js []byte, into any) []string {
	strictErrs, err := sigsjson.UnmarshalStrict(js, into)
	var out []string
	if err != nil {
		out = append(out, err.Error())
	}
	for _, e := range strictErrs {
		out = append(out, "strict decoding: "+e.Error())
	}
	return out
}

func checkServiceMonitor(sm *monv1.ServiceMonitor) []string {
	var errs []string
	if len(sm.Spec.Selector.MatchLabels) == 0 && len(sm.Spec.Selector.MatchExpressions) == 0 {
		errs = append(errs, "spec.selector selects every Service of the namespace")
	}
	if len(sm.Spec.Endpoints) == 0 {
		errs = append(errs, "spec.endpoints is empty")
	}
	for i, ep := range sm.Spec.Endpoints {
		if ep.Port == "" && ep.TargetPort == nil {
			errs = append(errs, fmt.Sprintf("spec.endpoints[%d]: neither port nor targetPort", i))
		}
		if ep.Port != "" && !portNameRe.MatchString(ep.Port) {
			errs = append(errs, fmt.Sprintf("spec.endpoints[%d].port %q is not a port name", i, ep.Port))
		}
		for name, d := range map[string]monv1.Duration{"interval": ep.Interval, "scrapeTimeout": ep.ScrapeTimeout} {
			if d != "" && !durationRe.MatchString(string(d)) {
				errs = append(errs, fmt.Sprintf("spec.endpoints[%d].%s %q does not match the CRD's duration pattern", i, name, d))
			}
		}
	}
	return errs
}

func checkPrometheusRule(pr *monv1.PrometheusRule) []string {
	var errs []string
	if len(pr.Spec.Groups) == 0 {
		errs = append(errs, "spec.groups is empty")
	}
	seen := map[string]bool{}
	for i, g := range pr.Spec.Groups {
		if g.Name == "" {
			errs = append(errs, fmt.Sprintf("spec.groups[%d].name is empty", i))
		}
		if seen[g.Name] {
			errs = append(errs, fmt.Sprintf("spec.groups[%d].name %q is not unique", i, g.Name))
		}
		seen[g.Name] = true
		if g.Interval != nil && !durationRe.MatchString(string(*g.Interval)) {
			errs = append(errs, fmt.Sprintf("group %q: interval %q does not match the duration pattern", g.Name, *g.Interval))
		}
		for j, r := range g.Rules {
			at := fmt.Sprintf("group %q rule %d", g.Name, j)
			if (r.Alert == "") == (r.Record == "") {
				errs = append(errs, at+": exactly one of alert and record must be set")
			}
			if r.Expr.String() == "" {
				errs = append(errs, at+": expr is empty")
			}
			if r.For != nil && !durationRe.MatchString(string(*r.For)) {
				errs = append(errs, fmt.Sprintf("%s: for %q does not match the duration pattern", at, *r.For))
			}
		}
	}
	return errs
}

func checkCompose(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	ctx := context.Background()
	opts, err := cli.NewProjectOptions([]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithResolvedPaths(true),
		cli.WithInterpolation(true),
		cli.WithDiscardEnvFile,
	)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(ctx)
	if err != nil {
		return err
	}
	var problems []string
	names := make([]string, 0, len(project.Services))
	for name := range project.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		svc := project.Services[name]
		before := len(problems)
		if svc.Image == "" && svc.Build == nil {
			problems = append(problems, name+": neither image nor build")
		}
		if b := svc.Build; b != nil {
			if st, err := os.Stat(b.Context); err != nil || !st.IsDir() {
				problems = append(problems, fmt.Sprintf("%s: build context %s is not a directory", name, b.Context))
			}
			df := b.Dockerfile
			if df == "" {
				df = "Dockerfile"
			}
			if !filepath.IsAbs(df) {
				df = filepath.Join(b.Context, df)
			}
			if _, err := os.Stat(df); err != nil {
				problems = append(problems, fmt.Sprintf("%s: Dockerfile %s: %v", name, df, err))
			}
		}
		for _, v := range svc.Volumes {
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					problems = append(problems, fmt.Sprintf("%s: bind mount source %s: %v", name, v.Source, err))
				}
			}
		}
		for dep := range svc.DependsOn {
			if _, ok := project.Services[dep]; !ok {
				problems = append(problems, fmt.Sprintf("%s: depends on unknown service %s", name, dep))
			}
		}
		img := svc.Image
		if svc.Build != nil {
			img += " (build " + filepath.Base(svc.Build.Dockerfile) + ")"
		}
		if len(problems) == before {
			fmt.Printf("  ok service %s: %s\n", name, img)
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	fmt.Printf("deploycheck compose: project %q, %d services valid\n", project.Name, len(project.Services))
	return nil
}
