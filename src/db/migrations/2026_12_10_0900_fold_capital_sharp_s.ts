import type { Kysely } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

/**
 * Usernames were case-folded by upper then lower case, which leaves the capital ẞ (U+1E9E) as ß where Unicode's full
 * case folding, and now registration and login, make it "ss": Weiẞ and weiß could be two accounts, and after the
 * change Weiẞ would no longer find its own row. Its rows get the new forms; ß is found only where ẞ was, since the
 * small ß always became "ss".
 */
export async function up(db: AnyDb): Promise<void> {
  if (db.isTransaction) await foldSharpS(db);
  else await db.transaction().execute(foldSharpS);
}

async function foldSharpS(db: AnyDb): Promise<void> {
  const rows: { id: number; username_canonical: string; username_skeleton: string | null }[] = await db
    .selectFrom('users')
    .select(['id', 'username_canonical', 'username_skeleton'])
    .where((eb) => eb.or([eb('username_canonical', 'like', '%ß%'), eb('username_skeleton', 'like', '%ß%')]))
    .orderBy('id')
    .execute();
  for (const row of rows) {
    const canonical = row.username_canonical.replaceAll('ß', 'ss');
    const skeleton = (row.username_skeleton ?? '').replaceAll('ß', 'ss');
    // Two accounts the old folding kept apart and the new one merges (Kloẞ beside kloss): the other keeps the name;
    // this one keeps its former forms, which no login by name reaches any more (a passkey still does).
    const other = await db
      .selectFrom('users')
      .select('id')
      .where('id', '!=', row.id)
      .where((eb) =>
        eb.or([eb('username_canonical', '=', canonical), eb('username_skeleton', '=', skeleton)]),
      )
      .executeTakeFirst();
    if (other) continue;
    await db
      .updateTable('users')
      .set({ username_canonical: canonical, username_skeleton: skeleton })
      .where('id', '=', row.id)
      .execute();
  }
}
