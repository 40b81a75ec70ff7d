"""Scale recommendations: Knative-KPA-style decisions per function from `function_load`,
served by the API (/v1/scale) and published to Kafka by `sandmeter scale`."""

from scaling.kpa import KpaConfig
from scaling.publisher import Publisher
from scaling.recommendations import Stale, UnknownFunction, recommend
from scaling.settings import ScaleSettings

__all__ = ["KpaConfig", "Publisher", "ScaleSettings", "Stale", "UnknownFunction", "recommend"]
