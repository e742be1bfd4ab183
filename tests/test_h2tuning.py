"""h2 as GhostCrate tunes it: header blocks decoders read back, frames that read the same."""

from __future__ import annotations

import h2.connection
import h2.events
import h2.settings
import pytest
from hpack import Decoder, HeaderTuple, NeverIndexedHeaderTuple
from hyperframe.frame import DataFrame, Frame
from hypothesis import given
from hypothesis import strategies as st

from ghostcrate.proxy import h2tuning
from ghostcrate.proxy.h2tuning import StatelessEncoder

RESPONSE = [
    (b":status", b"200"),  # the static table's exact entry
    (b":status", b"304"),
    (b"content-type", b"text/plain"),  # a static name (index 31), a new value
    (b"cache-control", b"no-cache"),  # index 24
    (b"etag", b'"0123456789abcdef0123456789abcdef"'),  # index 34
    (b"www-authenticate", b"Bearer"),  # index 61, the last static entry
    (b"accept-charset", b"utf-8"),  # index 15: the first that needs a second byte
    (b"x-request-id", b"5f0e2a1c-17"),  # a name the static table lacks
    (b"x-long", b"v" * 300),  # a length over the 7-bit prefix
    (b":path", b"/index/se/rd/serde"),
]

names = st.sampled_from([b":status", b"etag", b"x-request-id", b"accept-charset", b"date"])
values = st.binary(min_size=0, max_size=300).filter(lambda v: b"\n" not in v)


def test_a_response_block_decodes_to_the_same_fields() -> None:
    decoder = Decoder()
    assert decoder.decode(StatelessEncoder().encode(RESPONSE), raw=True) == RESPONSE


def test_nothing_enters_the_decoders_dynamic_table() -> None:
    encoder, decoder = StatelessEncoder(), Decoder()
    for _ in range(3):
        decoder.decode(encoder.encode(RESPONSE), raw=True)
    assert len(decoder.header_table.dynamic_entries) == 0


def test_static_matches_are_one_byte() -> None:
    assert StatelessEncoder().encode([(b":status", b"200"), (b":method", b"GET")]) == bytes(
        [0x88, 0x82]
    )


def test_never_indexed_fields_stay_never_indexed() -> None:
    block = StatelessEncoder().encode(
        [HeaderTuple(b"etag", b'"a"'), NeverIndexedHeaderTuple(b"authorization", b"Bearer x")]
    )
    first, second = Decoder().decode(block, raw=True)
    assert first == (b"etag", b'"a"')
    assert first.indexable
    assert second == (b"authorization", b"Bearer x")
    assert not second.indexable


def test_a_table_size_change_is_signalled_before_the_next_block() -> None:
    encoder, decoder = StatelessEncoder(), Decoder()
    encoder.header_table_size = 0
    decoder.header_table_size = 0  # what the decoding peer advertised
    block = encoder.encode(RESPONSE[:1])
    assert block[0] == 0x20  # RFC 7541 6.3: dynamic table size update to 0
    assert decoder.decode(block, raw=True) == RESPONSE[:1]
    assert encoder.encode(RESPONSE[:1]) == bytes([0x88])  # signalled once


@given(st.lists(st.tuples(names, values), max_size=12))
def test_any_fields_round_trip(fields: list[tuple[bytes, bytes]]) -> None:
    decoder = Decoder()
    decoder.max_header_list_size = 2**20
    assert decoder.decode(StatelessEncoder().encode(fields), raw=True) == fields


def test_an_h2_peer_reads_requests_and_responses_sent_with_it() -> None:
    client = h2.connection.H2Connection(h2tuning.configuration(client_side=True))
    server = h2.connection.H2Connection(h2tuning.configuration(client_side=False))
    h2tuning.tune(client)
    h2tuning.tune(server)
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    request = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"index.crates.io"),
        (b":path", b"/se/rd/serde"),
        (b"if-none-match", b'"abc"'),
    ]
    client.send_headers(1, request, end_stream=True)
    received = server.receive_data(client.data_to_send())
    assert [e.headers for e in received if isinstance(e, h2.events.RequestReceived)] == [request]
    response = RESPONSE[:1] + [f for f in RESPONSE if not f[0].startswith(b":")]
    server.send_headers(1, response, end_stream=True)
    answered = client.receive_data(server.data_to_send())
    assert [e.headers for e in answered if isinstance(e, h2.events.ResponseReceived)] == [response]


@pytest.mark.parametrize(
    ("data", "pad_length"), [(b"", 0), (b"abc", 0), (b"x" * 16384, 0), (b"ab", 3), (b"y" * 40, 20)]
)
def test_a_tuned_data_frame_reads_as_hyperframe_writes_it(data: bytes, pad_length: int) -> None:
    frame = DataFrame(1, data)
    if pad_length:
        frame.flags.add("PADDED")
        frame.pad_length = pad_length
    expected = Frame._body_repr(frame)  # hyperframe's own, whatever `tune` did to DataFrame
    h2tuning.tune(h2.connection.H2Connection(h2tuning.configuration(client_side=True)))
    assert repr(frame) == f"DataFrame(stream_id=1, flags={frame.flags!r}): {expected}"
