"""Run reports: statistics over paired seeds, a pipeline run's report.html and summary.md.

Example:
    >>> from prunus.report import summary
    >>> summary([1.0, 3.0])["mean"]
    2.0
"""

from prunus.report.render import write_report as write_report
from prunus.report.stats import paired_difference as paired_difference
from prunus.report.stats import summarise_records as summarise_records
from prunus.report.stats import summary as summary

__all__ = ["paired_difference", "summarise_records", "summary", "write_report"]
