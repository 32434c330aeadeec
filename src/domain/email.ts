import { domainToASCII, domainToUnicode } from 'node:url';

// An address as FastAPI's EmailStr (email-validator) reads one, so that the seed's clients and its users' rows come
// over: a dot-atom local part whose characters are ASCII atext or, beyond ASCII (RFC 6531), letters, marks, numbers,
// punctuation and symbols, never spaces, controls or invisible format characters; and a domain name, an
// internationalised one judged by its A-label (RFC 5890). Services judge new addresses with it, the schemas' `email`
// format is it (app.ts), and the repositories compare addresses by canonicalEmail.

/** RFC 5321 §4.5.3.1.3 on a whole address, in octets (as written, and with the domain as its A-label). */
export const MAX_EMAIL_LENGTH = 254;
/** RFC 5321 §4.5.3.1.1, in octets: a local part outside ASCII counts its UTF-8 bytes (RFC 6531 §3.3). */
export const MAX_LOCAL_PART_OCTETS = 64;
const MAX_DOMAIN_LENGTH = 253;

const LOCAL_PART =
  /^(?:[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]|(?![\p{C}\p{Z}])\P{ASCII})+(?:\.(?:[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]|(?![\p{C}\p{Z}])\P{ASCII})+)*$/u;
// A mark first would combine with whatever a mail client prints before the address.
const STARTS_WITH_MARK = /^\p{M}/u;
const ASCII = /^\p{ASCII}*$/u;
const ASCII_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
// Roughly IDNA 2008's PVALID: letters, marks and digits, hyphens inside. Symbols (💩.la) pass UTS 46 but not IDNA 2008.
const UNICODE_LABEL = /^[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}-]*[\p{L}\p{M}\p{N}])?$/u;
const NUMERIC = /^[0-9]+$/;

/** An address's local part and domain, split at its last @; undefined without one. */
function splitEmail(email: string): { local: string; domain: string } | undefined {
  const at = email.lastIndexOf('@');
  if (at <= 0) return undefined;
  return { local: email.slice(0, at), domain: email.slice(at + 1) };
}

/** One label as DNS reads it, lower-case ASCII; undefined when it is no label of a host name. */
function asciiLabel(label: string): string | undefined {
  if (ASCII.test(label)) {
    const lower = label.toLowerCase();
    if (!ASCII_LABEL.test(lower)) return undefined;
    // An A-label must be the encoding of a valid U-label: `xn--zz` decodes to nothing and would hide any text.
    if (lower.startsWith('xn--')) {
      const unicode = domainToUnicode(lower);
      if (unicode === lower || !UNICODE_LABEL.test(unicode) || domainToASCII(unicode) !== lower)
        return undefined;
    }
    return lower;
  }
  const folded = label.normalize('NFC').toLowerCase().normalize('NFC');
  if (!UNICODE_LABEL.test(folded)) return undefined;
  const encoded = domainToASCII(label);
  if (!ASCII_LABEL.test(encoded) || !encoded.startsWith('xn--')) return undefined;
  // UTS 46 maps some characters away (a soft hyphen, a zero-width space, a full-width letter): a domain must be
  // written as it reads, beyond letter case and composition.
  return domainToUnicode(encoded) === folded ? encoded : undefined;
}

/**
 * Returns the domain as DNS and SMTP servers read it, lower-case ASCII (an internationalised one as its A-label:
 * `bücher.de` is `xn--bcher-kva.de`), or undefined when it is no host name with a dot and a non-numeric top label.
 */
export function asciiDomain(domain: string): string | undefined {
  const labels = domain.split('.');
  if (labels.length < 2 || NUMERIC.test(labels.at(-1) ?? '')) return undefined;
  const ascii: string[] = [];
  for (const label of labels) {
    const encoded = asciiLabel(label);
    if (encoded === undefined) return undefined;
    ascii.push(encoded);
  }
  const joined = ascii.join('.');
  return joined.length <= MAX_DOMAIN_LENGTH ? joined : undefined;
}

/** Whether the text is an email address: the `email` format of every schema, and what registration accepts. */
export function isEmailAddress(email: string): boolean {
  const parts = splitEmail(email);
  if (!parts || !LOCAL_PART.test(parts.local) || STARTS_WITH_MARK.test(parts.local)) return false;
  const localOctets = Buffer.byteLength(parts.local);
  if (localOctets > MAX_LOCAL_PART_OCTETS) return false;
  const domain = asciiDomain(parts.domain);
  return (
    domain !== undefined &&
    Buffer.byteLength(email) <= MAX_EMAIL_LENGTH &&
    localOctets + 1 + domain.length <= MAX_EMAIL_LENGTH
  );
}

/**
 * The form an email address is compared, looked up and counted in: trimmed, case-folded (no provider tells letter
 * cases apart), the local part composed (NFC) and the domain as its A-label, so that `josé@bücher.de` in every case
 * and spelling is one address. An ASCII address is its lower-case self, as every earlier version stored it.
 */
export function canonicalEmail(email: string): string {
  const trimmed = email.trim();
  const parts = splitEmail(trimmed);
  const domain = parts && asciiDomain(parts.domain);
  if (!parts || domain === undefined) return trimmed.toLowerCase();
  return `${parts.local.normalize('NFC').toLowerCase().normalize('NFC')}@${domain}`;
}

/** Whether two addresses are one mailbox, as the unique index on the canonical form judges. */
export const sameAddress = (a: string, b: string): boolean => canonicalEmail(a) === canonicalEmail(b);
