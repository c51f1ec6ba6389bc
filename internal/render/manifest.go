package render

import (
	"bytes"
	"fmt"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The pieces every per-host component (the agent, an etcd member) is
// rendered from: its static pod manifest and its systemd unit.

// marshalPod is a static pod manifest's YAML. metav1 marshals an empty
// creationTimestamp and status, and an empty resources of a container
// that asks for none; that is noise in a file that a person reads, so it
// is dropped. what names the manifest in the error.
func marshalPod(pod corev1.Pod, what string) ([]byte, error) {
	out, err := yaml.Marshal(pod)
	if err != nil {
		return nil, fmt.Errorf("render: %s: %w", what, err)
	}
	out = bytes.ReplaceAll(out, []byte("  creationTimestamp: null\n"), nil)
	out = bytes.ReplaceAll(out, []byte("status: {}\n"), nil)
	out = bytes.ReplaceAll(out, []byte("    resources: {}\n"), nil)
	return out, nil
}

// staticPod is a host-network, node-critical pod in kube-system named
// name: the frame of every static pod haplane renders, around the spec the
// caller fills in.
func staticPod(name string, labels, annotations map[string]string, spec corev1.PodSpec) corev1.Pod {
	spec.HostNetwork = true
	spec.PriorityClassName = "system-node-critical"
	return corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system", Labels: labels, Annotations: annotations},
		Spec:       spec,
	}
}

// loopbackProbe is a kubelet probe of an HTTP path on 127.0.0.1:port (the
// component's own health port, never exposed); the caller sets the timing.
func loopbackProbe(path string, port int) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Host: "127.0.0.1", Path: path, Port: intstr.FromInt32(int32(port)), Scheme: corev1.URISchemeHTTP,
	}}}
}

// hostPathVolume is a pod volume of the host's path.
func hostPathVolume(name, path string, kind *corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: kind}}}
}

// unitTail ends every systemd unit haplane renders: the same hardening
// and install section for the agent and for an etcd member.
const unitTail = `{{define "unit-tail"}}NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
{{end}}`

// unitTemplate parses a unit's template, which may end with
// {{template "unit-tail"}}.
func unitTemplate(name, text string) *template.Template {
	return template.Must(template.Must(template.New(name).Parse(unitTail)).Parse(text))
}

// executeUnit fills a systemd unit template; what names the unit in the
// error.
func executeUnit(t *template.Template, data map[string]any, what string) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render: %s: %w", what, err)
	}
	return b.Bytes(), nil
}
