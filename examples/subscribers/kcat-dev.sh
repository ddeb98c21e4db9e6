#!/bin/sh
# kcat for the Tansu development broker: runs the system's kcat with the newer librdkafka that
# the confluent-kafka wheel ships. Debian 12's kcat links librdkafka 2.0.2, which cannot read
# Tansu's ApiVersions v3 reply ("Read underflow"); against Apache Kafka or Redpanda, plain kcat works.
#
#   PYTHON=.venv/bin/python examples/subscribers/kcat-dev.sh -C -b 127.0.0.1:9092 -t cityops.alerts.flood ...
set -eu
lib=$("${PYTHON:-python3}" -c '
import glob, os, confluent_kafka
libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
print(sorted(glob.glob(os.path.join(libs, "librdkafka*.so*")))[0])
')
dir="${TMPDIR:-/tmp}/cityops-rdkafka-$(id -u)"
mkdir -p "$dir"
ln -sf "$lib" "$dir/librdkafka.so.1"
LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec kcat "$@"
