/**
 * The client store's field schema (DESIGN.md §5 "Default deny"): which fields are stored in
 * clear. Every field is sealed unless the data dir's schema declares it plain, and three classes
 * of fields can never be declared plain: postal addresses, GPS coordinates and transcripts.
 *
 * Names are matched after normalisation (`normaliseFieldName`): Unicode NFKC, a case change
 * from lower to upper (camelCase) read as a separator, lowercased, trimmed, and every run of
 * separators (white space, dashes, '.', '_') made one '_'. So `Home Address`, `home-address`,
 * `homeAddress` and `ＨＯＭＥ＿ＡＤＤＲＥＳＳ` are one field `home_address`.
 *
 * The mandatory classes (`mandatoryClass`) are recognised on the normalised name with its
 * accents stripped (`coordonnées` = `coordonnees`): the whole name, or any of its '_'-separated
 * tokens (trailing digits ignored: `lat2`), is one of MANDATORY_NAMES; the longer, unambiguous
 * words of LONG_WORDS also match inside a token (`homeaddress`, `geolocationpoint`).
 * False positives (a `long_description` is read as a coordinate) are the price of the rule:
 * such a field stays sealed; rename it to store it in clear.
 *
 * Stored in store.db:
 *   field_schema(name TEXT PRIMARY KEY  -- normalised
 *                class TEXT 'plain' | 'sealed',
 *                since INTEGER)          -- the schema version that set it
 *   meta 'field-schema-version'          -- decimal, 1 for a new store, +1 on every change
 */
import { AegisError, ErrorCode } from '../../shared/errors.js';

export type FieldClass = 'plain' | 'sealed';
export type MandatoryClass = 'postal address' | 'GPS coordinates' | 'transcript';

/** English and French names of the mandatory classes, normalised and without accents. */
export const MANDATORY_NAMES: Readonly<Record<MandatoryClass, readonly string[]>> = Object.freeze({
  'postal address': Object.freeze(['address', 'addresses', 'addr', 'adresse', 'adresses', 'street', 'streets', 'rue', 'rues', 'postal', 'postcode', 'postcodes', 'zip', 'zipcode', 'cedex']),
  'GPS coordinates': Object.freeze([
    'gps', 'lat', 'latitude', 'latitudes', 'lon', 'lng', 'long', 'longitude', 'longitudes', 'latlng', 'latlon', 'lonlat', 'coordinate', 'coordinates', 'coordonnee', 'coordonnees', 'coord', 'coords',
    'location', 'locations', 'localisation', 'localisations', 'localization', 'geo', 'geoloc', 'geolocation', 'geolocalisation', 'geopoint', 'position', 'positions',
  ]),
  transcript: Object.freeze(['transcript', 'transcripts', 'transcription', 'transcriptions']),
});

/** Words long and specific enough to be recognised inside a token too (`homeaddress`). */
export const LONG_WORDS: Readonly<Record<MandatoryClass, readonly string[]>> = Object.freeze({
  'postal address': Object.freeze(['address', 'adresse', 'postcode', 'zipcode']),
  'GPS coordinates': Object.freeze(['latitude', 'longitude', 'coordinate', 'coordonnee', 'geolocation', 'geolocalisation']),
  transcript: Object.freeze(['transcript']),
});

const BY_NAME = new Map<string, MandatoryClass>();
for (const [cls, names] of Object.entries(MANDATORY_NAMES) as [MandatoryClass, readonly string[]][]) for (const n of names) BY_NAME.set(n, cls);

/** The normalised form of a field name, the key of the schema. */
export function normaliseFieldName(name: string): string {
  return (
    name
      .normalize('NFKC')
      // camelCase and ACRONYMWord boundaries are separators.
      .replace(/(\p{Ll}|\p{Nd})(\p{Lu})/gu, '$1_$2')
      .replace(/(\p{Lu})(\p{Lu}\p{Ll})/gu, '$1_$2')
      .toLowerCase()
      .normalize('NFKC')
      .replace(/[\s\p{Z}\p{Pd}._]+/gu, '_')
      .replace(/^_+|_+$/g, '')
  );
}

/** The normalised name without accents (NFD, combining marks dropped): what the classes match. */
export function matchKey(name: string): string {
  return normaliseFieldName(name).normalize('NFD').replace(/\p{M}+/gu, '').normalize('NFC');
}

/** The mandatory class a field name falls in, or undefined. */
export function mandatoryClass(name: string): MandatoryClass | undefined {
  const key = matchKey(name);
  const whole = BY_NAME.get(key);
  if (whole !== undefined) return whole;
  for (const raw of key.split('_')) {
    const token = raw.replace(/\d+$/, '');
    const cls = BY_NAME.get(token);
    if (cls !== undefined) return cls;
    for (const [c, words] of Object.entries(LONG_WORDS) as [MandatoryClass, readonly string[]][]) if (words.some((w) => token.includes(w))) return c;
  }
  return undefined;
}

export interface FieldSchema {
  /** 1 for a new store; +1 on every change. */
  version: number;
  /** Normalised name -> class, as declared. */
  fields: ReadonlyMap<string, FieldClass>;
}

/** How a stored field name is kept: sealed unless declared plain, and never plain for a mandatory class. */
export function classify(schema: FieldSchema, name: string): FieldClass {
  if (mandatoryClass(name) !== undefined) return 'sealed';
  return schema.fields.get(normaliseFieldName(name)) === 'plain' ? 'plain' : 'sealed';
}

export interface SchemaChange {
  /** Normalised name. */
  field: string;
  /** 'default' when the field was not declared (sealed by default). */
  from: FieldClass | 'default';
  to: FieldClass;
}

/**
 * The changes that declaring `plain` and `sealed` would make to `schema`, validated first: a
 * mandatory-class name asked to be plain, a name in both lists or an empty name is an
 * `invalid-argument` naming the column, and then nothing is to change. Names already declared
 * as asked make no change.
 */
export function planSchemaChange(schema: FieldSchema, want: { plain?: readonly string[]; sealed?: readonly string[] }): SchemaChange[] {
  const target = new Map<string, FieldClass>();
  const put = (raw: string, cls: FieldClass, flag: string): void => {
    if (typeof raw !== 'string') throw new AegisError(ErrorCode.InvalidArgument, `${flag}: field names must be strings`);
    const n = normaliseFieldName(raw);
    if (n.length === 0 || Buffer.byteLength(n) > 1024) throw new AegisError(ErrorCode.InvalidArgument, `${flag}: '${raw}' is not a field name (1..1024 bytes once normalised)`);
    if (cls === 'plain') {
      const m = mandatoryClass(raw);
      if (m !== undefined) throw new AegisError(ErrorCode.InvalidArgument, `${flag}: column '${raw}' is a ${m} field (${m} fields are always encrypted) and cannot be declared plain`);
    }
    const prev = target.get(n);
    if (prev !== undefined && prev !== cls) throw new AegisError(ErrorCode.InvalidArgument, `column '${raw}' is named both in --plain and --sealed`);
    target.set(n, cls);
  };
  for (const p of want.plain ?? []) put(p, 'plain', '--plain');
  for (const s of want.sealed ?? []) put(s, 'sealed', '--sealed');
  const changes: SchemaChange[] = [];
  for (const [field, to] of target) {
    const from = schema.fields.get(field) ?? 'default';
    if (from !== to) changes.push({ field, from, to });
  }
  return changes;
}

/** Splits a comma-separated CLI list ('a, b,,c' -> ['a', 'b', 'c']). */
export function fieldList(s: string | undefined): string[] {
  return (s ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
}
