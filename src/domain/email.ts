import { domainToASCII, domainToUnicode } from 'node:url';

// The seed stored any string as an email (`email: str`), so its clients may hold any address a mail system delivers to,
// international ones included (RFC 6531, IDNA). One mailbox must be one account whatever the spelling, since a second
// account on it could be reset by the first's owner; and an address must read as it will be delivered, since a
// character drawn as nothing would let two accounts look alike. The repositories compare by canonicalEmail, as the
// services do, because the unique index holds only that form.

/** RFC 5321 §4.5.3.1.3 on a whole address, in octets (as written, and with the domain as its A-label). */
export const MAX_EMAIL_LENGTH = 254;
/** RFC 5321 §4.5.3.1.1, in octets: a local part outside ASCII counts its UTF-8 bytes (RFC 6531 §3.3). */
export const MAX_LOCAL_PART_OCTETS = 64;
const MAX_DOMAIN_LENGTH = 253;

const LOCAL_PART =
  /^(?:[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]|(?![\p{C}\p{Z}\p{Default_Ignorable_Code_Point}\u2800])\P{ASCII})+(?:\.(?:[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]|(?![\p{C}\p{Z}\p{Default_Ignorable_Code_Point}\u2800])\P{ASCII})+)*$/u;
// A mark first would combine with whatever a mail client prints before the address.
const STARTS_WITH_MARK = /^\p{M}/u;
const ASCII = /^\p{ASCII}*$/u;
const ASCII_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
// Roughly IDNA 2008's PVALID: letters, marks and digits, hyphens inside. Symbols (💩.la) pass UTS 46 but not IDNA 2008.
const UNICODE_LABEL = /^[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}-]*[\p{L}\p{M}\p{N}])?$/u;
const NUMERIC = /^\p{N}+$/u;

/**
 * Unicode's full case folding, as usernames fold (security/usernames.ts): upper then lower case meets every case of a
 * letter (final and medial sigma, long s, the micro sign) and ß/SS.
 */
const foldCase = (text: string): string => text.toUpperCase().toLowerCase().replaceAll('ß', 'ss');

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
  const composed = label.normalize('NFC');
  // A compatibility character (a ligature, a full-width or superscript letter) is mapped away by UTS 46 as well.
  if (!UNICODE_LABEL.test(composed) || composed.normalize('NFKC') !== composed) return undefined;
  const encoded = domainToASCII(label);
  if (!ASCII_LABEL.test(encoded) || !encoded.startsWith('xn--')) return undefined;
  // UTS 46 maps some characters away (a soft hyphen, a zero-width space, a full-width letter): a domain must be
  // written as it reads, beyond letter case and composition.
  return foldCase(domainToUnicode(encoded)) === foldCase(composed) ? encoded : undefined;
}

/**
 * Returns the domain as DNS and SMTP servers read it, lower-case ASCII (an internationalised one as its A-label:
 * `bücher.de` is `xn--bcher-kva.de`), or undefined when it is no host name with a dot and a non-numeric top label.
 */
export function asciiDomain(domain: string): string | undefined {
  if (domain.length > MAX_DOMAIN_LENGTH) return undefined;
  const labels = domain.split('.');
  if (labels.length < 2) return undefined;
  const ascii: string[] = [];
  for (const label of labels) {
    const encoded = asciiLabel(label);
    if (encoded === undefined) return undefined;
    ascii.push(encoded);
  }
  // RFC 3696 §2: a top-level domain is never all digits, in any script (`a@1.2.3.4` is no host name).
  const top = ascii.at(-1) ?? '';
  if (NUMERIC.test(top.startsWith('xn--') ? domainToUnicode(top) : top)) return undefined;
  const joined = ascii.join('.');
  return joined.length <= MAX_DOMAIN_LENGTH ? joined : undefined;
}

/** Whether the text is an email address: the `email` format of every schema, and what registration accepts. */
export function isEmailAddress(email: string): boolean {
  if (email.length > MAX_EMAIL_LENGTH) return false;
  const parts = splitEmail(email);
  if (!parts || STARTS_WITH_MARK.test(parts.local)) return false;
  // The canonical form normalises the local part (NFKC): what it turns into must be a local part too (U+037E, the Greek
  // question mark, becomes a semicolon).
  if (!LOCAL_PART.test(parts.local) || !LOCAL_PART.test(parts.local.normalize('NFKC'))) return false;
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
 * The form an email address is compared, looked up and counted in: trimmed, the local part NFKC-normalised and
 * case-folded (no provider tells letter cases apart, and a full-width or compatibility spelling must not hold a second
 * account), the domain as its A-label, so that `josé@bücher.de` in every case and spelling is one address. An ASCII
 * address is its lower-case self, as every earlier version stored it.
 */
export function canonicalEmail(email: string): string {
  const trimmed = email.trim();
  const parts = splitEmail(trimmed);
  const domain = parts && asciiDomain(parts.domain);
  if (!parts || domain === undefined) return trimmed.toLowerCase();
  return `${foldLocalPart(parts.local)}@${domain}`;
}

/**
 * Whether the second address is the first as any mail server reads it: the local parts differ at most in ASCII letter
 * case and the domains name one domain. Other spellings with one canonical form (a Kelvin sign for a K, full-width
 * letters, another composition) are one account here, but the mail would go to other bytes.
 */
export function sameMailbox(a: string, b: string): boolean {
  const first = splitEmail(a.trim());
  const second = splitEmail(b.trim());
  if (!first || !second) return false;
  const domainOf = (text: string) => asciiDomain(text) ?? text.toLowerCase();
  return (
    domainOf(first.domain) === domainOf(second.domain) &&
    asciiLowerCase(first.local) === asciiLowerCase(second.local)
  );
}

const asciiLowerCase = (text: string) => text.replace(/[A-Z]/g, (letter) => letter.toLowerCase());

/** Whether two addresses are one mailbox, as the unique index on the canonical form judges. */
export const sameAddress = (a: string, b: string): boolean => canonicalEmail(a) === canonicalEmail(b);

/**
 * What a searched fragment of an address looks like inside canonical forms, for a substring search: the part before
 * `@` folded as canonicalEmail folds it, and each whole label of a domain as its A-label (`bücher.de` is stored as
 * `xn--bcher-kva.de`). Without an `@` the fragment may be either side, so both forms come back.
 */
export function emailSearchForms(fragment: string): string[] {
  const text = fragment.trim();
  const at = text.lastIndexOf('@');
  if (at !== -1) return [`${foldLocalPart(text.slice(0, at))}@${labelsAsAscii(text.slice(at + 1))}`];
  return [...new Set([foldLocalPart(text), labelsAsAscii(text)])];
}

const foldLocalPart = (local: string) => foldCase(local.normalize('NFKC')).normalize('NFKC');
const labelsAsAscii = (domain: string) =>
  domain
    .split('.')
    .map((label) => asciiLabel(label) ?? foldCase(label.normalize('NFC')))
    .join('.');
