"""The ``[[sensors]]`` table of an MQTT sensor, and the topics it is read from."""

from __future__ import annotations

from typing import Literal

from edge.config import SensorConfig

DEFAULT_TOPIC = "benchlink/sensors/{sensor_id}/readings"
WILDCARD_TOPIC = DEFAULT_TOPIC.format(sensor_id="+")


class MqttSensor(SensorConfig):
    """A ``[[sensors]]`` table with ``source = "mqtt"`` (the broker is ``[mqtt]``)."""

    source: Literal["mqtt"]
    #: unset: :data:`DEFAULT_TOPIC`
    topic: str | None = None

    @property
    def mqtt_topic(self) -> str:
        return self.topic or DEFAULT_TOPIC.format(sensor_id=self.sensor_id)
