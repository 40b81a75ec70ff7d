#!/bin/bash
# kafka-init (docker-compose.yml, a one-shot in the apache/kafka image): the services' SCRAM-SHA-512
# users, the topics, and the ACLs that let each service do only its part. Idempotent: compose
# runs it again on every `up` (restart: on-failure until it exits 0).
# Topics and the consumer group are contracts/names.py's and ProcessorSettings' (a test checks).
set -euo pipefail
bin=/opt/kafka/bin
server=kafka:9092
admin=(--bootstrap-server "$server" --command-config /etc/kafka/secrets/admin.properties)
partitions=${KAFKA_TOPIC_PARTITIONS:-12}
replicas=${KAFKA_TOPIC_REPLICAS:-1}

for user in collector processor scale; do
  var="KAFKA_${user^^}_PASSWORD"
  "$bin/kafka-configs.sh" "${admin[@]}" --alter --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=${!var}]"
done

for topic in sandmeter.samples.v1 sandmeter.samples.dlq sandmeter.alerts sandmeter.scale-decisions; do
  "$bin/kafka-topics.sh" "${admin[@]}" --create --if-not-exists --topic "$topic" \
    --partitions "$partitions" --replication-factor "$replicas"
done

acl() { "$bin/kafka-acls.sh" "${admin[@]}" --add --allow-principal "User:$1" "${@:2}"; }
acl collector --operation Write --operation Describe --topic sandmeter.samples.v1
acl processor --operation Read --operation Describe --topic sandmeter.samples.v1
acl processor --operation Write --operation Describe --topic sandmeter.samples.dlq
acl processor --operation Write --operation Describe --topic sandmeter.alerts
acl processor --operation Read --group sandmeter-processor
acl scale --operation Write --operation Describe --topic sandmeter.scale-decisions
echo "kafka-init: users, topics and ACLs in place"
