"""Turns what `kubectl kustomize` renders into what `podman kube play` (4.3)
can run on one machine, changing as little as it can and saying what it
changed. Every change is a consequence of podman not being Kubernetes:

- StatefulSet is not a kind podman plays: each member becomes the Pod the
  StatefulSet controller would create (etcd-0, etcd-1, ...: the template with
  metadata.name set, so POD_NAME from fieldRef is the member's name) and its
  volumeClaimTemplates become PersistentVolumeClaims named as Kubernetes names
  them (data-etcd-0), which podman makes named volumes.
- Services, headless or not, are not played (no cluster DNS, no virtual IPs):
  the names they give (etcd-0.etcd, idempotency-coordinator.<namespace>.svc)
  become hostAliases of every pod, pointing at the static IP of the pod they
  select.
- podman 4.3 publishes every containerPort on the host at the same port
  (Kubernetes publishes none without a hostPort), so two pods declaring 2379
  collide: each pod's ports get a hostIP of their own, a loopback address
  (127.0.28.N), which also lets the test reach each pod's declared ports.
- podman plays each replica of a Deployment as a pod publishing the same
  ports: replicas becomes 1.
- ServiceAccount, PodDisruptionBudget and NetworkPolicy have no podman
  counterpart and are left out (deploy-check.sh still validates them).
- podman 4.3 does not expand $(VAR) in command and args as the kubelet
  does (etcd would be named "$(POD_NAME)"): they are expanded here, from the
  container's env (values, and fieldRef metadata.name).
- Images no machine here can pull are replaced by the ones built here
  (image_substitutes).

Everything else — container args and command, env and envFrom, ports,
securityContext, volumes and mounts, probes — is passed to podman as
rendered; which of those podman ignores is checked by the test, not here.
"""

import copy
import re

PODMAN_KINDS = {"Pod", "Deployment", "PersistentVolumeClaim", "ConfigMap"}
VARIABLE_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_variables(container, pod_name):
    """$(NAME) in command and args, as the kubelet expands them; an unknown
    name stays as written, as in Kubernetes."""
    values = {}
    for variable in container.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        elif variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            values[variable["name"]] = pod_name
    for key in ("command", "args"):
        if key in container:
            container[key] = [VARIABLE_REFERENCE.sub(lambda m: values.get(m.group(1), m.group(0)), a) for a in container[key]]


def statefulset_members(statefulset):
    """The Pods and PersistentVolumeClaims a StatefulSet controller creates."""
    name = statefulset["metadata"]["name"]
    template = statefulset["spec"]["template"]
    claims = statefulset["spec"].get("volumeClaimTemplates", [])
    out = []
    for ordinal in range(statefulset["spec"].get("replicas", 1)):
        member = f"{name}-{ordinal}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": member,
                "namespace": statefulset["metadata"].get("namespace"),
                "labels": dict(template["metadata"].get("labels", {}), **{"statefulset.kubernetes.io/pod-name": member}),
            },
            "spec": copy.deepcopy(template["spec"]),
        }
        # Kubernetes gives the member the hostname etcd-0 (and the subdomain
        # of its Service, which podman has no use for).
        pod["spec"]["hostname"] = member
        volumes = pod["spec"].setdefault("volumes", [])
        for claim in claims:
            claim_name = f"{claim['metadata']['name']}-{member}"
            volumes.append({"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}})
            out.append({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim_name},
                "spec": copy.deepcopy(claim["spec"]),
            })
        out.append(pod)
    return out


def pod_template(resource):
    """(metadata, spec) of the pod a Pod or Deployment runs, else None."""
    if resource["kind"] == "Pod":
        return resource["metadata"], resource["spec"]
    if resource["kind"] == "Deployment":
        return resource["spec"]["template"]["metadata"], resource["spec"]["template"]["spec"]
    return None


def podman_pod_name(resource):
    """The pod name podman gives: a Deployment's first replica is NAME-pod-0."""
    name = resource["metadata"]["name"]
    return f"{name}-pod-0" if resource["kind"] == "Deployment" else name


class Played:
    """One render made playable: resources (in play order), the pods they
    start, and the kinds left out."""

    def __init__(self, resources, image_substitutes):
        self.resources, self.left_out, self.services = [], [], []
        for resource in resources:
            kind = resource["kind"]
            if kind == "StatefulSet":
                self.resources.extend(statefulset_members(resource))
            elif kind in PODMAN_KINDS:
                self.resources.append(copy.deepcopy(resource))
            else:
                self.left_out.append(f"{kind}/{resource['metadata']['name']}")
                if kind == "Service":
                    self.services.append(resource)
        for resource in self.resources:
            if resource["kind"] == "Deployment":
                resource["spec"]["replicas"] = 1
            template = pod_template(resource)
            if template:
                for container in template[1]["containers"]:
                    container["image"] = image_substitutes.get(container["image"], container["image"])
                    expand_variables(container, podman_pod_name(resource))
        self.pods = [r for r in self.resources if pod_template(r)]


def service_names(service):
    """The DNS names cluster DNS gives a Service: name, name.namespace, ..."""
    name, namespace = service["metadata"]["name"], service["metadata"].get("namespace", "default")
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


def address(played_renders, subnet_prefix, loopback_prefix, extra_names=()):
    """Gives every pod of every render a static IP on the test network and a
    loopback host address for its published ports, and every pod the
    hostAliases cluster DNS would answer. extra_names: (name, pod) pairs for
    names no render's Service gives. Returns {pod name: (ip, loopback)}."""
    addresses = {}
    pods = [(render, pod) for render in played_renders for pod in render.pods]
    for index, (_, pod) in enumerate(pods):
        addresses[podman_pod_name(pod)] = (f"{subnet_prefix}.{10 + index}", f"{loopback_prefix}.{10 + index}")
    aliases = {}
    for render in played_renders:
        for service in render.services:
            selector = service["spec"].get("selector", {})
            for _, pod in pods:
                labels = pod_template(pod)[0].get("labels", {})
                if not selector or any(labels.get(k) != v for k, v in selector.items()):
                    continue
                ip = addresses[podman_pod_name(pod)][0]
                names = aliases.setdefault(ip, [])
                if service["spec"].get("clusterIP") == "None" and pod["kind"] == "Pod":
                    # A headless Service names each StatefulSet member.
                    names += [f"{pod['metadata']['name']}.{n}" for n in service_names(service)]
                names += service_names(service)
    for name, pod_name in extra_names:
        aliases.setdefault(addresses[pod_name][0], []).append(name)
    for _, pod in pods:
        spec = pod_template(pod)[1]
        spec["hostAliases"] = [{"ip": ip, "hostnames": sorted(set(names))} for ip, names in sorted(aliases.items())]
        loopback = addresses[podman_pod_name(pod)][1]
        for container in spec["containers"]:
            for port in container.get("ports", []):
                port["hostIP"] = loopback
    return addresses
