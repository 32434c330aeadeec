import { domainToASCII, domainToUnicode } from 'node:url';
import { hasLongCombiningRun } from './text.ts';

// The seed stored any string as an email (`email: str`), so its clients may hold any address a mail system delivers to,
// international ones included (RFC 6531, IDNA). What every mail server reads as one mailbox must be one account, since
// a second account on it could be reset by the first's owner; what some server reads as two mailboxes must stay two,
// since the first registered would otherwise keep the other's owner out. An address must also read as it will be
// delivered: a character drawn as nothing would let two accounts look alike. The repositories compare by
// canonicalEmail, as the services do, because the unique index holds only that form.

/** RFC 5321 §4.5.3.1.3 on a whole address, in octets (as written, and with the domain as its A-label). */
export const MAX_EMAIL_LENGTH = 254;
/** RFC 5321 §4.5.3.1.1, in octets: a local part outside ASCII counts its UTF-8 bytes (RFC 6531 §3.3). */
export const MAX_LOCAL_PART_OCTETS = 64;
const MAX_DOMAIN_LENGTH = 253;

/**
 * Characters not drawn, for a regular expression's class (`u` flag): spaces, controls, format, private-use and
 * unassigned characters, and what is drawn as nothing: default-ignorable code points (Hangul fillers, variation
 * selectors), the blank braille pattern, the Khitan filler and the null notehead.
 */
export const UNDRAWN_CHARACTERS = String.raw`\p{C}\p{Z}\p{Default_Ignorable_Code_Point}\u2800\u{16FE4}\u{1D159}`;

// Beyond ASCII, anything drawn.
const NON_ASCII_ATEXT = `(?![${UNDRAWN_CHARACTERS}])\\P{ASCII}`;
const ATOM = `(?:[a-zA-Z0-9!#$%&'*+/=?^_\`{|}~-]|${NON_ASCII_ATEXT})+`;
const LOCAL_PART = new RegExp(`^${ATOM}(?:\\.${ATOM})*$`, 'u');
// A mark first would combine with whatever a mail client prints before the address.
const STARTS_WITH_MARK = /^\p{M}/u;
const ASCII = /^\p{ASCII}*$/u;
const ASCII_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
// Roughly IDNA 2008's PVALID: letters, marks and digits, hyphens inside. Symbols (💩.la) pass UTS 46 but not IDNA 2008.
const UNICODE_LABEL = /^[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}-]*[\p{L}\p{M}\p{N}])?$/u;
const NUMERIC = /^\p{N}+$/u;

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
  // Only letter case may differ. UTS 46 folds case, which is not always lower case: Cherokee folds to its capitals,
  // and a capital sigma is σ where JavaScript's lower case writes a final ς.
  const letters = (text: string) => text.toLowerCase().replaceAll('ς', 'σ');
  return letters(domainToUnicode(encoded)) === letters(composed) ? encoded : undefined;
}

/**
 * Returns the domain as DNS and SMTP servers read it, lower-case ASCII (an internationalised one as its A-label:
 * `bücher.de` is `xn--bcher-kva.de`), or undefined when it is no host name with a dot and a non-numeric top label.
 */
function asciiDomain(domain: string): string | undefined {
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

export type EmailAddressProblem = 'too_long' | 'local_part_too_long' | 'invalid';

/** Why the text is no email address (the likeliest cause first), or undefined when it is one. */
export function findEmailAddressProblem(email: string): EmailAddressProblem | undefined {
  if (email.length > MAX_EMAIL_LENGTH) return 'too_long';
  // Never normalised (text.ts), so never compared in one form: two spellings would be two addresses (review).
  if (hasLongCombiningRun(email)) return 'invalid';
  const parts = splitEmail(email);
  if (!parts) return 'invalid';
  const localOctets = Buffer.byteLength(parts.local);
  if (localOctets > MAX_LOCAL_PART_OCTETS) return 'local_part_too_long';
  // Addresses are kept in NFC, which must still be a local part (U+037E, the Greek question mark, becomes a
  // semicolon). A compatibility character (full-width, circled or mathematical letters, ligatures, the micro sign) is
  // refused: it would be another mailbox to a mail server, yet look like, and for uniqueness be, the plain letter.
  const composed = parts.local.normalize('NFC');
  if (
    STARTS_WITH_MARK.test(parts.local) ||
    !LOCAL_PART.test(composed) ||
    composed.normalize('NFKC') !== composed
  ) {
    return 'invalid';
  }
  const domain = asciiDomain(parts.domain);
  if (domain === undefined) return 'invalid';
  const tooLong =
    Buffer.byteLength(email) > MAX_EMAIL_LENGTH || localOctets + 1 + domain.length > MAX_EMAIL_LENGTH;
  return tooLong ? 'too_long' : undefined;
}

/** Whether the text is an email address: the `email` format of every schema, and what registration accepts. */
export const isEmailAddress = (email: string): boolean => findEmailAddressProblem(email) === undefined;

/**
 * The form an email address is compared, looked up and counted in: trimmed, NFC, the ASCII letters of the local part in
 * lower case and the domain as its A-label, so that `José@Bücher.de`, `JOSé@xn--bcher-kva.de` and their decomposed
 * spellings are one address. Letters beyond ASCII keep their case: mail servers differ on it (`JOSÉ` and `josé`,
 * Georgian capitals, Cherokee), and one account holding both spellings would let whoever registered first keep the
 * other's owner out, every reset mailed to the first. An ASCII address is its lower-case self, as ever.
 */
export function canonicalEmail(email: string): string {
  const trimmed = email.trim();
  // No address holds such a run (findEmailAddressProblem); normalising it would take time in its square (text.ts).
  if (hasLongCombiningRun(trimmed)) return trimmed.toLowerCase();
  const parts = splitEmail(trimmed);
  const domain = parts && asciiDomain(parts.domain);
  if (!parts || domain === undefined) return trimmed.normalize('NFC').toLowerCase();
  return `${lowerLocalPart(parts.local)}@${domain}`;
}

/** The address as it is stored and mailed to: trimmed and composed (NFC), which a Kelvin sign leaves a K. */
export const storedEmail = (email: string): string => {
  const trimmed = email.trim();
  return hasLongCombiningRun(trimmed) ? trimmed : trimmed.normalize('NFC');
};

/** Whether two addresses are one account's address: their canonical forms, which the unique index holds, are equal. */
export const sameAddress = (a: string, b: string): boolean => canonicalEmail(a) === canonicalEmail(b);

/**
 * What a searched fragment of an address looks like inside canonical forms, for a substring search: the part before
 * `@` as canonicalEmail writes it, and each whole label of a domain as its A-label (`bücher.de` is stored as
 * `xn--bcher-kva.de`). Without an `@` the fragment may be either side, so both forms come back.
 */
export function emailSearchForms(fragment: string): string[] {
  const text = fragment.trim();
  const at = text.lastIndexOf('@');
  if (at !== -1) return [`${lowerLocalPart(text.slice(0, at))}@${labelsAsAscii(text.slice(at + 1))}`];
  return [...new Set([lowerLocalPart(text), labelsAsAscii(text)])];
}

// Lower case can compose (`J\u030C` has no composed form, `j\u030C` is `ǰ`): composed again after.
const lowerLocalPart = (local: string) =>
  local
    .normalize('NFC')
    .replace(/[A-Z]/g, (letter) => letter.toLowerCase())
    .normalize('NFC');
const labelsAsAscii = (domain: string) =>
  domain
    .split('.')
    .map((label) => asciiLabel(label) ?? label.normalize('NFC').toLowerCase())
    .join('.');
