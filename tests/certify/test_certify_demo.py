"""The demo's certification section: a VRA curve and no broken certificate."""

from lipkit.cli.demo import Progress, certification_section


def test_certification_section_quick(tmp_path):
    section = certification_section(tmp_path, Progress(False), 0, True, {})
    assert section.metrics["broken_certificates"] == 0
    result = section.metrics["Björck + MaxMin, margin-CE"]
    vra = list(result["certified_accuracy"].values())
    pgd = list(result["pgd_accuracy"].values())
    assert vra == sorted(vra, reverse=True) and vra[0] == result["clean_accuracy"] > 0.5
    assert all(v <= p + 1e-12 for v, p in zip(vra, pgd, strict=True))
    assert (tmp_path / "certified_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "certified_accuracy.png" in section.markdown
