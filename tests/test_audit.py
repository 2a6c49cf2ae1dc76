"""`Corpus.leaked`: whole tokens only, so the chaos run's search of thousands of values has no false alarms."""

from cidsync_tooling.audit import Corpus


def test_values_are_found_as_whole_tokens_with_where() -> None:
    corpus = Corpus()
    corpus.add("wf-1", '{"note": "owner Ana Souza, key ana.souza.123456@exemplo.com.", "cpf": "12345678901"}')
    corpus.add("wf-2", "sequence 9912345678901, run 5dec234e-2b1c-4f7a-9c1e-000000000001 at 2026")
    corpus.add("wf-3", "Maria Ana Souza Lima")
    values = [
        "Ana Souza",
        "ana.souza.123456@exemplo.com",
        "12345678901",
        "5dec234e-2b1c-4f7a-9c1e-000000000001",
        "Jose Silva",
        "45678",
    ]
    assert corpus.leaked(values) == {
        "Ana Souza": ["wf-1", "wf-3"],  # a run of words, wherever it stands
        "ana.souza.123456@exemplo.com": ["wf-1"],
        "12345678901": ["wf-1"],  # not inside the longer number of wf-2
        "5dec234e-2b1c-4f7a-9c1e-000000000001": ["wf-2"],
    }
