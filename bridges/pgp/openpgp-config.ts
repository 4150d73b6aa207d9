// openpgp.js settings that keep everything we write readable by GnuPG 2.2, the legacy (XEP-0027)
// users' usual implementation: v4 keys and signatures, SEIPDv1 (MDC) encryption, never AEAD/SEIPDv2
// or v6 packets (GnuPG 2.2 knows none of them). Passed explicitly to every openpgp call, never set
// globally, so other engines (OX) may choose differently.
import * as openpgp from 'openpgp';

const { enums } = openpgp;

export const PGP_CONFIG: openpgp.PartialConfig = {
  v6Keys: false,
  aeadProtect: false,
  enableParsingV5Entities: false,
  // AES-256 and SHA-256 are in every GnuPG preference list since 1.4.
  preferredSymmetricAlgorithm: enums.symmetric.aes256,
  preferredHashAlgorithm: enums.hash.sha256,
  preferredCompressionAlgorithm: enums.compression.uncompressed,
  showVersion: false,
  showComment: false,
  // A body is at most a few hundred KB; refuse compression bombs early.
  maxDecompressedMessageSize: 4 * 1024 * 1024,
};

/** Message.decrypt/verify take a full Config, not a partial one. */
export const FULL_CONFIG: openpgp.Config = { ...openpgp.config, ...PGP_CONFIG };

/**
 * Tolerated clock difference with senders: openpgp refuses signatures (and keys) created "in the
 * future", which a sender's clock running a little ahead would otherwise cause.
 */
export const CLOCK_SKEW_MS = 5 * 60 * 1000;
