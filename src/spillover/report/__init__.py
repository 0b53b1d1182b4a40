"""The study report: plotly figures (`plots`), escaped tables (`tables`) and one self-contained HTML file (`html`)."""

from spillover.report.html import Section, render_report, write_report

__all__ = ["Section", "render_report", "write_report"]
