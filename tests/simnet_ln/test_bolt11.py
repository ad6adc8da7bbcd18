"""The simulator's invoices are real BOLT #11: the ``bolt11`` library decodes them and checks
their signatures, the fast writer matches ``bolt11.encode`` string for string, and BOLT #11's
own examples read back."""

from __future__ import annotations

import hashlib

import bolt11
import pytest
from bitstring import Bits
from coincurve import PrivateKey

from satvault.simnet.ln import InvalidPaymentRequest, LnNetwork
from satvault.simnet.ln import _bolt11 as codec

# BOLT #11 (lightning/bolts, 11-payment-encoding.md, "Examples"): the examples are signed by
# this key, whose public key is 03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad.
BOLT_PRIVKEY = "e126f68f7eafcc8b74f54d269fe206be715000f94dac067d1c04a8ca3b2db734"
BOLT_PUBKEY = "03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad"
# "Please send $30 for coffee beans to the same peer, which supports features 9, 15 and 99,
# using secret 0x1111111111111111111111111111111111111111111111111111111111111111"
BOLT_COFFEE = (
    "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdee"
    "ssp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q5sqqqqqqqqqqqqqqqpqsq67gye39hfg3zd"
    "8rgc80k32tvy9xk2xunwm5lzexnvpx6fd77en8qaq424dxgt56cag2dpt359k3ssyhetktkpqh24jqnjyw6uqd08sgptq"
    "44qu")
# "Now send $24 for an entire list of things (hashed)"
BOLT_HASHED = (
    "lnbc20m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgy"
    "nm4zwqd5d7xmw5fk98klysy043l2ahrqscc6gd6ql3jrc5yzme8v4ntcewwz5cnw92tz0pc8qcuufvq7khhr8wpald05e"
    "92xw006sq94mg8v2ndf4sefvf9sygkshp5zfem29trqq2yxxz7")
# "The same, on testnet, with a fallback address mk2QpYatsKicvFVuTAQLBryyccRXMUaGHP"
BOLT_FALLBACK = (
    "lntb20m1pvjluezhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqs"
    "yqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfpp3x9et2e20v6pu37c5d9vax37wxq72un98kmzzhznpurw9sgl2v0nklu2g4"
    "d0keph5t7tj9tcqd8rexnd07ux4uv2cjvcqwaxgj7v4uwn5wmypjd5n69z2xm3xgksg28nwht7f6zspwp3f9t")
PAYMENT_HASH = "0001020304050607080900010203040506070809000102030405060708090102"


def test_invoices_decode_and_verify_against_the_node_key(net: LnNetwork) -> None:
    inv = net.create_invoice("platform", 150_000, memo="order 42", expiry=600, cltv_expiry=80)
    decoded = bolt11.decode(inv.bolt11)  # validates: payment hash, secret, description
    assert decoded.currency == "bcrt"
    assert inv.bolt11.startswith("lnbcrt1500n1")
    assert decoded.amount_msat == 150_000
    assert decoded.payment_hash == inv.payment_hash
    assert hashlib.sha256(bytes.fromhex(inv.preimage)).hexdigest() == inv.payment_hash
    assert decoded.payment_secret == inv.payment_addr
    assert decoded.description == "order 42"
    assert decoded.expiry == 600
    assert decoded.min_final_cltv_expiry == 80
    assert decoded.payee == net.pubkey("platform")
    assert decoded.signature is not None
    assert decoded.signature.verify(net.pubkey("platform"))
    with pytest.raises(ValueError):
        decoded.signature.verify(net.pubkey("customer1"))
    assert decoded.features is not None
    assert decoded.features.has_feature("payment_secret") == "required"


def test_amountless_hashed_description_and_fallback(net: LnNetwork) -> None:
    digest = hashlib.sha256(b"a long terms-of-sale text").digest()
    inv = net.create_invoice("customer1", None, description_hash=digest,
                             fallback_addr="bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
    decoded = bolt11.decode(inv.bolt11)
    assert decoded.amount_msat is None
    assert decoded.description is None
    assert decoded.description_hash == digest.hex()
    assert decoded.signature is not None and decoded.signature.verify(net.pubkey("customer1"))
    req = codec.decode(inv.bolt11)
    assert req.fallback_address == "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    assert req.payee == net.pubkey("customer1")


@pytest.mark.parametrize("address", [
    "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",  # P2WPKH
    "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry",  # P2WSH
    "bcrt1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqc8gma6",  # P2TR
    "mk2QpYatsKicvFVuTAQLBryyccRXMUaGHP",  # P2PKH
    "2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc",  # P2SH
])
def test_fallback_addresses_round_trip(address: str) -> None:
    words = codec.fallback_words(address, "bcrt")
    assert codec.fallback_address(words, "bcrt") == address


def test_writer_matches_the_bolt11_library() -> None:
    key = PrivateKey(bytes.fromhex(BOLT_PRIVKEY))
    mine = codec.encode(key=key, currency="bcrt", amount_msat=123_456, timestamp=1_700_000_000,
                        payment_hash=bytes.fromhex(PAYMENT_HASH), payment_secret=b"\x11" * 32,
                        description="coffee beans", expiry=3600, min_final_cltv_expiry=80)
    tags = bolt11.Tags()
    tags.add(bolt11.TagChar.payment_hash, PAYMENT_HASH)
    tags.add(bolt11.TagChar.payment_secret, "11" * 32)
    tags.add(bolt11.TagChar.description, "coffee beans")
    tags.add(bolt11.TagChar.expire_time, 3600)
    tags.add(bolt11.TagChar.min_final_cltv_expiry, 80)
    tags.add(bolt11.TagChar.features,
             bolt11.Features(Bits(uint=codec.FEATURES_DEFAULT, length=20), {}))
    reference = bolt11.Bolt11(currency="bcrt", date=1_700_000_000, tags=tags,
                              amount_msat=bolt11.MilliSatoshi(123_456))
    assert mine == bolt11.encode(reference, BOLT_PRIVKEY)


def test_bolt_examples_decode() -> None:
    coffee = codec.decode(BOLT_COFFEE)
    assert coffee.payee == BOLT_PUBKEY
    assert coffee.amount_msat == 2_500_000_000
    assert coffee.description == "coffee beans"
    assert coffee.payment_hash == PAYMENT_HASH
    assert coffee.payment_secret == "11" * 32
    assert coffee.features == (1 << 9) | (1 << 15) | (1 << 99)
    hashed = codec.decode(BOLT_HASHED)
    assert hashed.payee == BOLT_PUBKEY
    assert hashed.description_hash == (
        "3925b6f67e2c340036ed12093dd44e0368df1b6ea26c53dbe4811f58fd5db8c1")
    fallback = codec.decode(BOLT_FALLBACK)
    assert fallback.currency == "tb"
    assert fallback.fallback_address == "mk2QpYatsKicvFVuTAQLBryyccRXMUaGHP"
    assert fallback.payee == BOLT_PUBKEY


def test_bolt_example_signature_recreated() -> None:
    """Fields written in the example's order (p, d, s, 9) and signed with its key give the
    example itself: hrp, timestamp, tagged fields, signing data and checksum all agree."""
    key = PrivateKey(bytes.fromhex(BOLT_PRIVKEY))
    words = [(1496314658 >> 5 * (6 - i)) & 31 for i in range(7)]
    words += codec._tagged("p", codec._words_from_bytes(bytes.fromhex(PAYMENT_HASH)))
    words += codec._tagged("d", codec._words_from_bytes(b"coffee beans"))
    words += codec._tagged("s", codec._words_from_bytes(b"\x11" * 32))
    words += codec._tagged("9", codec._words_from_int((1 << 9) | (1 << 15) | (1 << 99)))
    hrp = "lnbc25m"
    words += codec._words_from_bytes(
        key.sign_recoverable(hrp.encode() + codec._bytes_from_words(words)))
    text = hrp + "1" + "".join(codec.CHARSET[w] for w in [*words, *codec._checksum(hrp, words)])
    assert text == BOLT_COFFEE


def test_garbage_is_refused() -> None:
    with pytest.raises(InvalidPaymentRequest):
        codec.decode("lnbcrt1garbage")
    broken = BOLT_COFFEE[:-1] + ("q" if BOLT_COFFEE[-1] != "q" else "p")
    with pytest.raises(InvalidPaymentRequest):
        codec.decode(broken)


def test_same_seed_same_keys_and_preimages() -> None:
    a, b, c = LnNetwork(), LnNetwork(), LnNetwork(seed="another")
    try:
        assert a.pubkey("platform") == b.pubkey("platform") != c.pubkey("platform")
        ia = a.create_invoice("platform", 1000)
        ib = b.create_invoice("platform", 1000)
        assert ia.preimage == ib.preimage and ia.payment_hash == ib.payment_hash
        assert a.create_invoice("platform", 1000).preimage != ia.preimage
    finally:
        for n in (a, b, c):
            n.close()
