"""Hand-written env files and what each consumer makes of them: one case per distinctive behaviour.

Each expectation was measured with the real program (docker CLI 28.2 and 20.10, podman 4.3, Docker
Compose v2.40.3). tests/unit/renderers/test_oracle_emulations.py checks that the emulations of
tests/support/render_oracles.py give exactly these answers; the integration tests in
tests/integration/renderers run the same files through the real programs, so neither the
expectations nor the emulations can drift from what the programs do.
"""

from __future__ import annotations

from typing import Final

# The expected answer of a case: the environment read, or one of these two markers.
REFUSED: Final = "refused"  # the real program refuses the file, and so does the emulation
UNMODELLED: Final = "unmodelled"  # the emulation refuses a form it does not model (the program may not)

# The host environment the real programs get in these cases (a bare name reads it).
HOST = {"FROM_HOST": "read from the host", "PREFIX_A": "prefixed a", "PREFIX_B": "prefixed b"}

LINE_MAX = 64 * 1024 - 1

# name -> (file, docker's answer, podman's answer)
LINE_CASES: dict[str, tuple[bytes, dict[str, str] | str, dict[str, str] | str]] = {
    "value_is_every_byte_after_the_first_equals": (
        b"A=b=c 'q' \"d\" $HOME \\n  \n",
        {"A": "b=c 'q' \"d\" $HOME \\n  "},
        {"A": "b=c 'q' \"d\" $HOME \\n  "},
    ),
    "comments_and_blank_lines": (b"# c\n\t# c\n   \t \nM=1\n", {"M": "1"}, {"M": "1"}),
    "leading_unicode_space": (
        "\u00a0B=1\n\u3000C=1\n\x0bD=1\n".encode(),
        {"B": "1", "C": "1", "D": "1"},
        {"\u00a0B": "1", "\u3000C": "1", "\x0bD": "1"},
    ),
    "file_separator_is_no_space": (b"\x1cA=1\n", {"\x1cA": "1"}, {"\x1cA": "1"}),
    "bom_on_line_one": ("\ufeffF=1\n".encode(), {"F": "1"}, {"\ufeffF": "1"}),
    "bom_on_line_two": ("X=1\n\ufeffE=1\n".encode(), {"X": "1", "\ufeffE": "1"}, {"X": "1", "\ufeffE": "1"}),
    "space_in_name": (b"G =1\n", REFUSED, {"G ": "1"}),
    "other_blanks_in_name": (
        "H\x0bI=1\nJ\u00a0K=1\n".encode(),
        {"H\x0bI": "1", "J\u00a0K": "1"},
        {"H\x0bI": "1", "J\u00a0K": "1"},
    ),
    "empty_name": (b"=x\n", REFUSED, REFUSED),
    "one_cr_before_lf_dropped": (
        b"N=a\rb\r\nO=a\r\r\n",
        {"N": "a\rb", "O": "a\r"},
        {"N": "a\rb", "O": "a\r"},
    ),
    "bare_name_from_host": (
        b"FROM_HOST\nNOT_ON_HOST\n",
        {"FROM_HOST": HOST["FROM_HOST"]},
        {"FROM_HOST": HOST["FROM_HOST"]},
    ),
    "bare_name_with_blanks": (b"  FROM_HOST  \n", REFUSED, {}),
    "prefix_import": (b"PREFIX_*\n", {}, {"PREFIX_A": "prefixed a", "PREFIX_B": "prefixed b"}),
    "later_assignment_wins": (b"Q=1\nQ=2\n", {"Q": "2"}, {"Q": "2"}),
    "names_are_not_checked": (b"1-u.v[w]=1\n", {"1-u.v[w]": "1"}, {"1-u.v[w]": "1"}),
    "no_final_newline": (b"LAST=x", {"LAST": "x"}, {"LAST": "x"}),
    "longest_line": (
        b"L=" + b"x" * (LINE_MAX - 2) + b"\n",
        {"L": "x" * (LINE_MAX - 2)},
        {"L": "x" * (LINE_MAX - 2)},
    ),
    "longest_last_line": (
        b"L=" + b"x" * (LINE_MAX - 2),
        {"L": "x" * (LINE_MAX - 2)},
        {"L": "x" * (LINE_MAX - 2)},
    ),
    "line_one_byte_too_long": (b"L=" + b"x" * (LINE_MAX - 1) + b"\n", REFUSED, REFUSED),
    "last_line_one_byte_too_long": (b"L=" + b"x" * (LINE_MAX - 1), REFUSED, REFUSED),
    "cr_counts_towards_the_limit": (
        b"L=" + b"x" * (LINE_MAX - 3) + b"\r\n",
        {"L": "x" * (LINE_MAX - 3)},
        {"L": "x" * (LINE_MAX - 3)},
    ),
}

# Not UTF-8: docker refuses it; podman takes it (its inspect output cannot show the raw bytes, so the
# integration test checks only that podman accepts the file).
INVALID_UTF8 = b"L=\xff\n"

# name -> (file, Compose's answer); the bare name FROM_HOST is set in Compose's environment
COMPOSE_CASES: dict[str, tuple[bytes, dict[str, str] | str]] = {
    "unquoted_values": (
        b"A=plain\nA2=  spaced  \nA3=v # c\nA4=v# c\nA5=v\\tw\\\\x\n",
        {"A": "plain", "A2": "spaced", "A3": "v", "A4": "v# c", "A5": "v\\tw\\\\x"},
    ),
    "inline_comment_needs_a_space": (
        b"V6=a\t# c\nK6=a  # b # c\nAJ=#x\nAK= #x\n",
        {"V6": "a\t# c", "K6": "a", "AJ": "#x", "AK": "#x"},
    ),
    "unicode_blanks_around_a_value": (
        "K3=\u00a0v\u00a0\nK12=\x85a\nK13=\x0ba\x0b\n".encode(),
        {"K3": "v", "K12": "a", "K13": "a"},
    ),
    "empty_values": (b"K=\nK0= \nZ=1\n", {"K": "", "K0": "", "Z": "1"}),
    "single_quotes_are_literal": (b"B='lit $x \\n \\' end'\n", {"B": "lit $x \\n ' end"}),
    "single_quotes_keep_backslashes": (b"B2='a\\\\b\\c'\nK8='a\\''\n", {"B2": "a\\\\b\\c", "K8": "a'"}),
    "double_quote_escapes": (
        b'C="e \\n \\r \\t \\\\ \\" \\$ \\a \\b \\f \\v \\x41 \\c \\q \\\'"\n',
        {"C": "e \n \r \t \\ \" $ \a \b \f \v \\x41 \\c \\q \\'"},
    ),
    "octal_escapes": (
        b'Q="\\0"\nQ2="\\012"\nQ3="\\0777"\nO1="\\0351"\nO2="\\01011"\nO3="\\08"\nO4="\\0400"\nO5="\\0377"\nO6="\\00"\n',
        {
            "Q": "\\",
            "Q2": "\\12",
            "Q3": "\\777",
            "O1": "\u00e9",
            "O2": "A1",
            "O3": "\\8",
            "O4": "\\400",
            "O5": "\u00ff",
            "O6": "\\0",
        },
    ),
    "backslash_newline_in_double_quotes_is_kept": (b'N="a\\\nb"\n', {"N": "a\\\nb"}),
    "backslash_before_the_closing_quote": (b'K4="a\\\\"\nK5="\\\\\\""\n', {"K4": "a\\", "K5": '\\"'}),
    "quoted_values_span_lines": (b"I=\"multi\nline\"\nO='a\nb'\n", {"I": "multi\nline", "O": "a\nb"}),
    "literal_dollars": (
        b'J="$$"\nJ2="a$"\nJ3="$ x"\nV="$1 x"\nV2="$(x)"\nV3="\\$HOME"\nV4="$$HOME"\nP=unq$$d\nAB=$\n',
        {
            "J": "$",
            "J2": "a$",
            "J3": "$ x",
            "V": "$1 x",
            "V2": "$(x)",
            "V3": "$HOME",
            "V4": "$HOME",
            "P": "unq$d",
            "AB": "$",
        },
    ),
    "escaped_dollar_pairs_with_its_neighbours": (b'AE="\\\\$$"\nAF="$\\$$"\n', {"AE": "\\$", "AF": "$$"}),
    "comment_after_the_closing_quote": (
        b'D="x" # comment\nAI=\'a # b\' # c\nK7="a"#c\n',
        {"D": "x", "AI": "a # b", "K7": "a"},
    ),
    "reading_resumes_after_the_closing_quote": (
        b"D2=\"x\"FROM_HOST\nS='x' y\n",
        {"D2": "x", "FROM_HOST": HOST["FROM_HOST"], "S": "x"},
    ),
    "second_quoted_string": (b'W="a" "b"\n', REFUSED),
    "unterminated_quote": (b'X="unterminated\n', REFUSED),
    "export_prefix": (
        b"export E=1\nexport  \tK10=1\nexportK11=1\n",
        {"E": "1", "K10": "1", "exportK11": "1"},
    ),
    "export_alone_is_a_bare_name": (b"export\n", {}),
    "bare_names": (b"FROM_HOST\nNOT_ON_HOST\nAG  \nZ=1\n", {"FROM_HOST": HOST["FROM_HOST"], "Z": "1"}),
    "colon_separator": (b"G: v\n", {"G": "v"}),
    "blanks_around_names": (
        "  H=1\n\u00a0K2=1\nM = spaced key\n\u00a0#c\nK9=1\n".encode(),
        {"H": "1", "K2": "1", "M": "spaced key", "K9": "1"},
    ),
    "name_characters": (
        "L.x-y[0]=1\n\u00c9=1\nA\u00a0B=1\n".encode(),
        {"L.x-y[0]": "1", "\u00c9": "1", "A\u00a0B": "1"},
    ),
    "space_inside_a_name": (b"A B=1\n", REFUSED),
    "semicolon_is_no_comment": (b";x=1\n", REFUSED),
    "empty_name_is_a_name": (b"=x\n", {"": "x"}),
    "comment_has_no_continuation": (b"# c\\\nAF=1\n", {"AF": "1"}),
    "unquoted_backslash_at_the_end": (b"Y=a\\\nZ=1\n", {"Y": "a\\", "Z": "1"}),
    "crlf": (b'T=a\r\nU="b"\r\n', {"T": "a", "U": "b"}),
    "bom": (b"\xef\xbb\xbfBOM=1\n", {"BOM": "1"}),
    "interpolation": (b'V5="$HOME"\n', UNMODELLED),
    "interpolation_of_an_underscore_name": (b"P2=a$_x\n", UNMODELLED),
    "escapes_before_interpolation": (b'P1="$\\0101"\n', UNMODELLED),  # `\0101` is `A`, then `$A` is expanded
    "nul": (b"AA=1\x00x\n", UNMODELLED),
}
