"""Renders a Kustomize directory under deploy/ without a kustomize binary
(none is reachable from CI), so that overlays are validated as rendered.

It implements only what these kustomizations use: resources (files and
directories), namespace, labels (metadata only), images, and patches given
inline as JSON 6902 with a kind/name target. Any other field is an error, so
the renderer cannot silently diverge from kustomize.

Usage: render_kustomize.py DIRECTORY  (prints the rendered YAML stream)
"""

import pathlib
import sys

import jsonpatch
import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}


class Unsupported(Exception):
    pass


def _pod_containers(resource):
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("initContainers", []) + spec.get("containers", [])


def render(directory):
    directory = pathlib.Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise Unsupported(f"{directory}: fields this renderer does not implement: {sorted(unknown)}")
    resources = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += render(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for label in kustomization.get("labels", []):
        if set(label) != {"pairs"}:
            raise Unsupported(f"{directory}: labels with {sorted(set(label) - {'pairs'})}")
        for resource in resources:
            resource.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for patch in kustomization.get("patches", []):
        target = patch.get("target", {})
        if set(patch) != {"target", "patch"} or set(target) - {"kind", "name"}:
            raise Unsupported(f"{directory}: only inline JSON 6902 patches with a kind/name target")
        operations = yaml.safe_load(patch["patch"])
        matched = 0
        for index, resource in enumerate(resources):
            if resource["kind"] == target["kind"] and resource["metadata"]["name"] == target.get("name"):
                resources[index] = jsonpatch.apply_patch(resource, operations)
                matched += 1
        if matched == 0:
            raise Unsupported(f"{directory}: patch target {target} matches no resource")
    for image in kustomization.get("images", []):
        for resource in resources:
            for container in _pod_containers(resource):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    if "namespace" in kustomization:
        for resource in resources:
            resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


if __name__ == "__main__":
    try:
        print(yaml.safe_dump_all(render(sys.argv[1]), sort_keys=False), end="")
    except (Unsupported, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        sys.exit(f"render_kustomize: {error}")
