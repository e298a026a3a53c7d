"""HTTP clients for the predictor, Prometheus and Alertmanager.

Build each once per invocation (`AppState.predictor_client()`, ...) and reuse it:
connections are pooled, and every call has a timeout. Failures raise `ClientError`
(a `ServiceError`) whose `kind` is one of `FailureKind`.
"""

from market_agent.clients.alertmanager import AlertmanagerClient, Matcher, Silence
from market_agent.clients.base import (
    DEFAULT_RETRY,
    NO_RETRY,
    ClientError,
    DeadlineExceeded,
    FailureKind,
    RetryPolicy,
    ServiceClient,
    run_concurrently,
)
from market_agent.clients.predictor import (
    Health,
    PredictorClient,
    predictor_query,
    scrape_labels,
)
from market_agent.clients.prometheus import (
    PrometheusClient,
    PromQLError,
    RuleAlert,
    Sample,
    Series,
    Target,
    finite,
    label_selector,
)

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRY",
    "AlertmanagerClient",
    "ClientError",
    "DeadlineExceeded",
    "FailureKind",
    "Health",
    "Matcher",
    "PredictorClient",
    "PromQLError",
    "PrometheusClient",
    "RetryPolicy",
    "RuleAlert",
    "Sample",
    "Series",
    "ServiceClient",
    "Silence",
    "Target",
    "finite",
    "label_selector",
    "predictor_query",
    "run_concurrently",
    "scrape_labels",
]
