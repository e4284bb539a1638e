"""anypost-conformance: a conformance harness for Anypost SMTP submission.

Declarative YAML scenarios (``*.scenario.yaml``) are loaded into a model, run by the engine over
the harness's own strict SMTP wire reader against a target described by a profile, judged by pure matchers, and reported
through pytest (JUnit, Allure) and the conformance report.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
