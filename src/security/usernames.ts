import unhomoglyph from 'unhomoglyph';

export type UsernameProblem =
  | 'mixed_scripts'
  | 'mixed_digit_systems'
  | 'no_letter_or_digit'
  | 'invisible_characters'
  | 'bidi_order';

// ISO 15924 codes of every Unicode script (17.0); one the running ICU does not know is dropped, and a letter
// of no known script is refused as mixed rather than waved through.
const SCRIPT_CODES =
  `Adlm Aghb Ahom Arab Armi Armn Avst Bali Bamu Bass Batk Beng Berf Bhks Bopo Brah Brai Bugi Buhd Cakm
  Cans Cari Cham Cher Chrs Copt Cpmn Cprt Cyrl Deva Diak Dogr Dsrt Dupl Egyp Elba Elym Ethi Gara Geor Glag Gong Gonm
  Goth Gran Grek Gujr Gukh Guru Hang Hani Hano Hatr Hebr Hira Hluw Hmng Hmnp Hung Ital Java Kali Kana Kawi Khar Khmr
  Khoj Kits Knda Krai Kthi Lana Laoo Latn Lepc Limb Lina Linb Lisu Lyci Lydi Mahj Maka Mand Mani Marc Medf Mend Merc
  Mero Mlym Modi Mong Mroo Mtei Mult Mymr Nagm Nand Narb Nbat Newa Nkoo Nshu Ogam Olck Onao Orkh Orya Osge Osma Ougr
  Palm Pauc Perm Phag Phli Phlp Phnx Plrd Prti Rjng Rohg Runr Samr Sarb Saur Sgnw Shaw Shrd Sidd Sidt Sind Sinh Sogd
  Sogo Sora Soyo Sund Sunu Sylo Syrc Tagb Takr Tale Talu Taml Tang Tavt Tayo Telu Tfng Tglg Thaa Thai Tibt Tirh Tnsa
  Todr Tols Toto Tutg Ugar Vaii Vith Wara Wcho Xpeo Xsux Yezi Yiii Zanb`.split(/\s+/);

// Compiled on the first non-ASCII name: some 170 property classes take a few hundred milliseconds, which every
// process start (and the seed command) would otherwise pay.
let scripts: { code: string; pattern: RegExp }[] | undefined;
const loadScripts = () =>
  (scripts ??= SCRIPT_CODES.flatMap((code) => {
    try {
      return [{ code, pattern: new RegExp(`\\p{Script_Extensions=${code}}`, 'u') }];
    } catch {
      return [];
    }
  }));

// Script_Extensions Common or Inherited only (ASCII digits, . _ -, most combining marks): such a character fits
// any script. Arabic-Indic digits are not among them: their extensions name Arabic, Thaana and Yezidi.
const ANY_SCRIPT = /^[\p{Script_Extensions=Zyyy}\p{Script_Extensions=Zinh}]$/u;

// UTS #39 §5.2 "highly restrictive": besides a single script, these combinations are how Japanese, Chinese
// and Korean are written, with Latin.
const ALLOWED_COMBINATIONS = [
  ['Latn', 'Hani', 'Hira', 'Kana'],
  ['Latn', 'Hani', 'Bopo'],
  ['Latn', 'Hani', 'Hang'],
];

/**
 * Returns why a trimmed, NFKC username may not be registered (it holds a letter drawn as nothing, mixes scripts or
 * digit systems, or has neither letter nor digit), or undefined.
 */
export function findUsernameProblem(display: string): UsernameProblem | undefined {
  if (!/[\p{L}\p{Nd}]/u.test(display)) return 'no_letter_or_digit';
  // The Hangul fillers are letters (Lo) yet default-ignorable: `victim7` with one is drawn as `victim7`. UTS #39 drops
  // such characters from a skeleton; refusing them keeps the stored skeletons of names registered before valid.
  if (/\p{Default_Ignorable_Code_Point}/u.test(display)) return 'invisible_characters';
  if (/^[\0-\x7f]*$/.test(display)) return undefined;
  const SCRIPTS = loadScripts();
  const scriptSets: string[][] = [];
  for (const character of display) {
    if (!ANY_SCRIPT.test(character)) {
      scriptSets.push(SCRIPTS.filter(({ pattern }) => pattern.test(character)).map(({ code }) => code));
    }
  }
  const isSingleScript = SCRIPTS.some(({ code }) => scriptSets.every((scripts) => scripts.includes(code)));
  const isAllowedCombination = ALLOWED_COMBINATIONS.some((combination) =>
    scriptSets.every((scripts) => scripts.some((code) => combination.includes(code))),
  );
  if (!isSingleScript && !isAllowedCombination) return 'mixed_scripts';
  const digitSystems = new Set([...display].filter(isDecimalDigit).map(digitZero));
  if (digitSystems.size > 1) return 'mixed_digit_systems';
  if (!followsBidiRule(display)) return 'bidi_order';
  return undefined;
}

// The scripts written right to left, whose letters are of bidirectional class R or AL.
const RTL_SCRIPT_CODES =
  `Adlm Arab Armi Avst Chrs Cprt Elym Gara Hatr Hebr Hung Khar Lydi Mand Mani Merc Mend Mero
  Narb Nbat Nkoo Orkh Ougr Palm Phli Phlp Phnx Prti Rohg Samr Sarb Sidt Sogd Sogo Syrc Thaa Yezi`.split(
    /\s+/,
  );

let rightToLeft: RegExp | undefined;
// By Script_Extensions: the Arabic tatweel is of the Common script but used only in right-to-left ones (class AL).
const loadRightToLeft = () =>
  (rightToLeft ??= new RegExp(
    `[${RTL_SCRIPT_CODES.flatMap((code) => {
      try {
        new RegExp(`\\p{Script_Extensions=${code}}`, 'u');
        return [`\\p{Script_Extensions=${code}}`];
      } catch {
        return [];
      }
    }).join('')}]`,
    'u',
  ));

type BidiClass = 'R' | 'AN' | 'EN' | 'L' | 'neutral';

// Bidi_Class is no property JavaScript's regular expressions know; within what a username may hold (letters and digits
// of one script, and . _ -) these cover it: Arabic-Indic, Hanifi Rohingya and Garay digits are AN; ASCII and extended
// Arabic-Indic digits EN; the letters and digits of right-to-left scripts R; letters of no script but Common (modifier
// letters such as ʹ) neutral, as . _ - are; other letters and digits L (RFC 5893 §1.4's classes).
function bidiClassOf(character: string): BidiClass {
  if (/[\u0660-\u0669\u{10D30}-\u{10D39}\u{10D40}-\u{10D49}]/u.test(character)) return 'AN';
  if (/[0-9\u06F0-\u06F9]/.test(character)) return 'EN';
  if (!/[\p{L}\p{Nd}]/u.test(character)) return 'neutral';
  if (loadRightToLeft().test(character)) return 'R';
  return /^\p{Script_Extensions=Zyyy}$/u.test(character) ? 'neutral' : 'L';
}

/**
 * RFC 5893 §2, the Bidi Rule of IDNA, for a name holding right-to-left characters: it begins with a right-to-left
 * letter, holds no left-to-right one, ends with a letter or a digit, and uses one of the EN and AN digit kinds.
 * Otherwise digits or . _ - at its ends are drawn on the other side, and two names are drawn alike.
 */
function followsBidiRule(display: string): boolean {
  const classes = [...display].map(bidiClassOf);
  if (!classes.some((kind) => kind === 'R' || kind === 'AN')) return true;
  if (classes[0] !== 'R' || classes.includes('L')) return false;
  const last = classes.at(-1);
  if (last !== 'R' && last !== 'EN' && last !== 'AN') return false;
  return !(classes.includes('EN') && classes.includes('AN'));
}

// confusables.txt maps Cyrillic в, н, т, м, к (and so their capitals, once case-folded) to small capitals or
// lookalike letters, and leaves most Latin small capitals unmapped: because names are case-insensitive and shown
// in whatever case their owner chose, each of these reads as the capital of an ASCII letter.
const SMALL_CAPITALS: Record<string, string> = {
  ᴀ: 'a',
  ʙ: 'b',
  ᴄ: 'c',
  ᴅ: 'd',
  ᴇ: 'e',
  ꜰ: 'f',
  ɢ: 'g',
  ʜ: 'h',
  ɪ: 'i',
  ᴊ: 'j',
  ᴋ: 'k',
  ĸ: 'k',
  ʟ: 'l',
  ᴍ: 'm',
  ʍ: 'm',
  ɴ: 'n',
  ᴏ: 'o',
  ᴘ: 'p',
  ꞯ: 'q',
  ʀ: 'r',
  ꜱ: 's',
  ᴛ: 't',
  ᴜ: 'u',
  ᴠ: 'v',
  ᴡ: 'w',
  ʏ: 'y',
  ᴢ: 'z',
};

/**
 * Returns the text case-folded as Unicode's full case folding does (CaseFolding.txt, statuses C and F): upper then
 * lower case folds ß/SS and ﬁ/fi, and leaves only the capital ẞ (U+1E9E) as ß, which full folding makes "ss" too.
 * Against Python's str.casefold, letter by letter up to U+2FFFF, it makes the same classes but one: the dotless ı
 * meets i, as upper case makes both I (lookalikes, which usernames keep apart nowhere anyway).
 */
export function foldCase(text: string): string {
  return text.toUpperCase().toLowerCase().replaceAll('ß', 'ss');
}

/**
 * Returns the confusable skeleton of a username as it is displayed (trimmed, NFKC, in the case its owner chose):
 * two names that look alike have the same skeleton. UTS #39 §4 (NFD, map through confusables.txt, NFD) on the
 * displayed glyphs, so that capitals meet capitals (`ΒΟΒ` and `bob`, since names are case-insensitive), then case-
 * folded; with three supplements: decimal digits of any system become ASCII digits, small capitals their ASCII
 * letters, and a dot above after i or j is dropped (as it is drawn). ASCII is left as it is: `l`/`1`, `rn`/`m` and `0`/`o` have always been different accounts here,
 * and the seed command's names (`seed-<n in base 36>`) rely on it.
 */
export function usernameSkeleton(display: string): string {
  const prototypes = display
    .normalize('NFD')
    .replace(/[^\0-\x7f]/gu, (character) =>
      isDecimalDigit(character)
        ? String(character.codePointAt(0)! - digitZero(character))
        : prototypeOf(character),
    );
  return foldCase(prototypes)
    .replace(/([ij])\u0307/g, '$1')
    .normalize('NFD');
}

// confusables.txt draws every I-shaped letter as its prototype `l`; a capital one (Greek Ι, Cyrillic І) reads as
// the capital I, which is `i` once case-folded, so `ΜΙΚΕ` meets `mike`.
function prototypeOf(character: string): string {
  const mapped = unhomoglyph(character).replace(/./gu, (prototype) => SMALL_CAPITALS[prototype] ?? prototype);
  return mapped === 'l' && character !== character.toLowerCase() ? 'I' : mapped;
}

const isDecimalDigit = (character: string) => /^\p{Nd}$/u.test(character);

// Unicode encodes every decimal digit system as 0-9 in consecutive code points, some systems back to back
// (the mathematical digits), so a digit's value is its distance from the start of its run, modulo ten.
function digitZero(digit: string): number {
  const codePoint = digit.codePointAt(0)!;
  let start = codePoint;
  while (isDecimalDigit(String.fromCodePoint(start - 1))) start -= 1;
  return codePoint - ((codePoint - start) % 10);
}
