from fewbit.report.document import Section, write_report
from fewbit.report.pareto import pareto_front, plot_pareto
from fewbit.report.tables import csv_text, markdown_table


def test_pareto_front_keeps_only_undominated_points():
    pts = [(100, 0.9), (50, 0.8), (200, 0.85), (50, 0.7), (10, 0.5), (300, 0.95)]
    assert sorted(pareto_front(pts)) == [0, 1, 4, 5]


def test_tables():
    md = markdown_table(["a", "b"], [[1, 0.123456], ["x", "y"]])
    assert md.splitlines()[1] == "| --- | --- |" and "0.1235" in md
    assert csv_text(["a", "b"], [[1, 2]]) == "a,b\n1,2\n"


def test_report_and_plot(tmp_path):
    rows = [
        {"algorithm": "protonet", "bytes": 450_000, "accuracy": 0.95, "ci95": 0.01, "label": "fp32"},
        {"algorithm": "protonet", "bytes": 60_000, "accuracy": 0.94, "ci95": 0.01, "label": "w4"},
        {"algorithm": "maml", "bytes": 60_000, "accuracy": 0.90, "ci95": 0.02, "label": "w4"},
    ]
    png = plot_pareto(rows, tmp_path / "pareto.png", title="t")
    assert png.read_bytes()[:4] == b"\x89PNG"
    md, html = write_report(tmp_path, "Demo <report>", [
        Section("Results", ["para & text"], ["model", "acc"], [["fp32", 0.95]], ["pareto.png"]),
    ])
    assert "| model | acc |" in md.read_text()
    text = html.read_text()
    assert "&lt;report&gt;" in text and "para &amp; text" in text and 'src="pareto.png"' in text
