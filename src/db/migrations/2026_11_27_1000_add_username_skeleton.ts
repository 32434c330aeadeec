import { type Kysely, PostgresAdapter, sql } from 'kysely';
import unhomoglyph from 'unhomoglyph';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

const BATCH = 1000;

export async function up(db: AnyDb): Promise<void> {
  // Kysely runs migrations in a transaction on PostgreSQL but not on SQLite: a backfill cut short there must not
  // leave a column behind that the retry would fail to add.
  if (db.isTransaction) await addUsernameSkeletons(db);
  else await db.transaction().execute(addUsernameSkeletons);
}

async function addUsernameSkeletons(db: AnyDb): Promise<void> {
  await sql`alter table users add column username_skeleton text`.execute(db);
  // Unique from the start (NULLs never collide), so the look-ups below use it.
  await sql`create unique index users_username_skeleton_key on users (username_skeleton)`.execute(db);
  // In id order, the older of two rows that already look alike keeps the skeleton, so a new lookalike of either
  // still collides with it; the newer one's skeleton gets ` #<id>`, which no skeleton contains (usernames have no
  // spaces), and both accounts keep logging in, by username_canonical.
  for (let afterId = 0; ; ) {
    const rows: { id: number; username: string }[] = await db
      .selectFrom('users')
      .select(['id', 'username'])
      .where('id', '>', afterId)
      .orderBy('id')
      .limit(BATCH)
      .execute();
    if (rows.length === 0) break;
    const skeletons = rows.map((row) => ({
      id: Number(row.id),
      skeleton: skeletonOf(row.username),
    }));
    const taken = new Set<string>(
      (
        await db
          .selectFrom('users')
          .select('username_skeleton')
          .where('username_skeleton', 'in', [...new Set(skeletons.map((entry) => entry.skeleton))])
          .execute()
      ).map((row) => row.username_skeleton),
    );
    for (const entry of skeletons) {
      if (taken.has(entry.skeleton)) entry.skeleton = `${entry.skeleton} #${entry.id}`;
      else taken.add(entry.skeleton);
    }
    await db
      .updateTable('users')
      .set({
        username_skeleton: sql`case id ${sql.join(
          skeletons.map((entry) => sql`when ${entry.id} then ${entry.skeleton}`),
          sql` `,
        )} end`,
      })
      .where(
        'id',
        'in',
        skeletons.map((entry) => entry.id),
      )
      .execute();
    afterId = skeletons[skeletons.length - 1]!.id;
  }
  // SQLite cannot add NOT NULL to an existing column without rebuilding the table; every insert sets it.
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    await sql`alter table users alter column username_skeleton set not null`.execute(db);
  }
}

export async function down(db: AnyDb): Promise<void> {
  await sql`drop index users_username_skeleton_key`.execute(db);
  await sql`alter table users drop column username_skeleton`.execute(db);
}

// A copy of src/security/usernames.ts's usernameSkeleton as of this migration: the rows it writes must match
// what registration computed then, whatever that file becomes.
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

function skeletonOf(display: string): string {
  return display
    .normalize('NFD')
    .replace(/[^\0-\x7f]/gu, (character) =>
      isDecimalDigit(character)
        ? String(character.codePointAt(0)! - digitZero(character))
        : prototypeOf(character),
    )
    .toUpperCase()
    .toLowerCase()
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

function digitZero(digit: string): number {
  const codePoint = digit.codePointAt(0)!;
  let start = codePoint;
  while (isDecimalDigit(String.fromCodePoint(start - 1))) start -= 1;
  return codePoint - ((codePoint - start) % 10);
}
