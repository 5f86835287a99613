"""Reports: statistics over paired seeds, run reports (HTML + Markdown), the README results block.

Example:
    >>> from prunus.report import summary
    >>> summary([1.0, 3.0])["mean"]
    2.0
"""

from prunus.report.render import write_report as write_report
from prunus.report.results import render as render_results
from prunus.report.results import update_readme as update_readme
from prunus.report.stats import paired_difference as paired_difference
from prunus.report.stats import summarise_records as summarise_records
from prunus.report.stats import summary as summary

__all__ = ["paired_difference", "render_results", "summarise_records", "summary", "update_readme", "write_report"]
