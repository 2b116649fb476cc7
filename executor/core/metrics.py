"""Prometheus metrics of the executor, in the text exposition format."""

from collections import defaultdict
from collections.abc import Mapping

from executor.core.pool import WarmPool
from schemas.languages import Language

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in pairs)
    return "{" + inner + "}"


class Metrics:
    """Counters and a run-duration histogram; gauges are read at scrape time."""

    def __init__(self) -> None:
        self.runs: defaultdict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.errors: defaultdict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self._hist: defaultdict[str, list[int]] = defaultdict(lambda: [0] * len(_BUCKETS))
        self._hist_sum: defaultdict[str, float] = defaultdict(float)
        self._hist_count: defaultdict[str, int] = defaultdict(int)

    def observe_run(self, language: str, outcome: str, seconds: float) -> None:
        """Count one finished run and its duration."""
        self.runs[(("language", language), ("outcome", outcome))] += 1
        buckets = self._hist[language]
        for i, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
        self._hist_sum[language] += seconds
        self._hist_count[language] += 1

    def count_error(self, code: str) -> None:
        """Count a request refused with an executor error."""
        self.errors[(("code", code),)] += 1

    def render(self, pools: Mapping[Language, WarmPool], sessions: int) -> str:
        """The exposition text, with the pools' and sessions' gauges read now."""
        gauges: dict[str, list[tuple[dict[str, str], float]]] = {
            "code_exec_pool_ready": [
                ({"language": lang.value}, float(pool.ready)) for lang, pool in pools.items()
            ],
            "code_exec_pool_exhausted_total": [
                ({"language": lang.value}, float(pool.exhausted)) for lang, pool in pools.items()
            ],
            "code_exec_sandboxes_started_total": [
                ({"language": lang.value}, float(pool.created)) for lang, pool in pools.items()
            ],
            "code_exec_sandbox_start_seconds_total": [
                ({"language": lang.value}, pool.start_seconds_total) for lang, pool in pools.items()
            ],
            "code_exec_sessions_open": [({}, float(sessions))],
        }
        out = [
            "# HELP code_exec_runs_total Runs finished, by language and outcome.",
            "# TYPE code_exec_runs_total counter",
        ]
        out += [f"code_exec_runs_total{_labels(k)} {v}" for k, v in sorted(self.runs.items())]
        out += [
            "# HELP code_exec_errors_total Requests refused, by error code.",
            "# TYPE code_exec_errors_total counter",
        ]
        out += [f"code_exec_errors_total{_labels(k)} {v}" for k, v in sorted(self.errors.items())]
        out += [
            "# HELP code_exec_run_duration_seconds Wall time of runs.",
            "# TYPE code_exec_run_duration_seconds histogram",
        ]
        for language, buckets in sorted(self._hist.items()):
            for bound, count in zip(_BUCKETS, buckets, strict=True):
                out.append(
                    f'code_exec_run_duration_seconds_bucket{{language="{language}",le="{bound}"}} '
                    f"{count}"
                )
            total = self._hist_count[language]
            out.append(
                f'code_exec_run_duration_seconds_bucket{{language="{language}",le="+Inf"}} {total}'
            )
            out.append(
                f'code_exec_run_duration_seconds_sum{{language="{language}"}} '
                f"{self._hist_sum[language]:.6f}"
            )
            out.append(f'code_exec_run_duration_seconds_count{{language="{language}"}} {total}')
        for name, samples in gauges.items():
            out.append(f"# TYPE {name} gauge")
            for labels, value in samples:
                out.append(f"{name}{_labels(tuple(labels.items()))} {value:g}")
        return "\n".join(out) + "\n"
