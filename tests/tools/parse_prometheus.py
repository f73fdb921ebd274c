"""Parses Prometheus text from stdin with the official client's parser
(prometheus_client.parser) and prints its samples as JSON: [{"name", "labels", "value"}].
Fails (non-zero) on text the parser refuses. Used by functions/switchboard/tests/metrics.rs."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    text = sys.stdin.read()
    samples = []
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
    json.dump({"types": types, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
