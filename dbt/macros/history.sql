{#
    history/<table>: every version of every source row, built from the change log
    raw.<table>_changes (one row per change: the image, `_op`, position `(_lsn, _seq)`, commit
    time `_commit_ts`).

    A change that is not a delete or truncate ('c', 'u', 'r') starts a version of its key; the
    next change of the key (in position order, so several changes in one transaction or at one
    commit time order correctly) ends it, and so does the first truncate after it. A delete ends
    the last version and starts none. A primary-key update arrives as a delete of the old key and
    an update of the new key at the next position: the old key's version ends by 'd', the new
    key's first version starts by 'u'. Intervals are half open, [valid_from, valid_to); the
    current version has valid_to null. A version that lived inside one transaction is empty
    (valid_from = valid_to): no one could see it.

    Incremental on position: a run reads only the changes after the newest position the history
    holds, plus the open versions of the keys those changes touch (all open versions when one is
    a truncate), and merges: new versions are inserted, reopened ones get their end. Never
    fully refreshed: the history outlives the change log's retention (macros/retention.sql).
#}

{% macro history_config(table, key) %}
    {{ return({
        'materialized': 'incremental',
        'incremental_strategy': 'merge',
        'unique_key': key + ['valid_from_lsn', 'valid_from_seq'],
        'merge_update_columns': ['valid_from', 'valid_to', 'ended_by', 'ended_lsn', 'ended_seq'],
        'on_schema_change': 'append_new_columns',
        'full_refresh': false,
        'cluster_by': key if target.type == 'bigquery' else none,
        'post_hook': ["{{ prune_history() }}", "{{ prune_change_log('" ~ table ~ "') }}"],
    }) }}
{% endmacro %}


{# `* except` in the dialect: DuckDB EXCLUDE, BigQuery EXCEPT. #}
{% macro star_except(alias, columns) -%}
    {{ return(adapter.dispatch('star_except')(alias, columns)) }}
{%- endmacro %}

{% macro default__star_except(alias, columns) -%}
    {{ alias }}.* except ({{ columns | join(', ') }})
{%- endmacro %}

{% macro duckdb__star_except(alias, columns) -%}
    {{ alias }}.* exclude ({{ columns | join(', ') }})
{%- endmacro %}


{% macro history_versions(table, key) %}
{%- set log = source('app_changes', table ~ '_changes') -%}
{%- set keys = key | join(', ') -%}
{%- set meta = ['_lsn', '_seq', '_op', '_commit_ts', '_loaded_at', '_source_lsn'] -%}

with

{% if is_incremental() %}
positions as (

    select valid_from_lsn as lsn, valid_from_seq as seq from {{ this }}
    union all
    select ended_lsn as lsn, ended_seq as seq from {{ this }} where ended_lsn is not null

),

watermark as (

    select lsn, max(seq) as seq from positions
    where lsn = (select max(lsn) from positions)
    group by lsn

),
{% endif %}

changes as (

    select c.* from {{ log }} c
    {% if is_incremental() %}
    cross join watermark w
    where c._lsn > w.lsn or (c._lsn = w.lsn and c._seq > w.seq)
    {% endif %}

),

truncates as (

    select _lsn as lsn, _seq as seq, _commit_ts as ts from changes where _op = 't'

),

events as (

    select {{ keys }}, _lsn as lsn, _seq as seq, _op as op, _commit_ts as ts, _op <> 'd' as is_start
    from changes
    where _op <> 't'

    {% if is_incremental() %}
    union all

    -- the open versions these changes may end (every one when a truncate came)
    select {{ keys }}, valid_from_lsn as lsn, valid_from_seq as seq, started_by as op,
        valid_from as ts, true as is_start
    from {{ this }} h
    where h.valid_to is null
        and (
            exists (select 1 from truncates)
            or exists (
                select 1 from changes c
                where {% for k in key %}c.{{ k }} = h.{{ k }}{% if not loop.last %} and {% endif %}{% endfor %}
            )
        )
    {% endif %}

),

bounded as (

    select
        *,
        lead(lsn) over by_position as next_lsn,
        lead(seq) over by_position as next_seq,
        lead(op) over by_position as next_op,
        lead(ts) over by_position as next_ts
    from events
    window by_position as (partition by {{ keys }} order by lsn, seq)

),

truncated as (

    -- the first truncate after each version's start
    select {% for k in key %}v.{{ k }}, {% endfor %}v.lsn, v.seq,
        t.lsn as t_lsn, t.seq as t_seq, t.ts as t_ts,
        row_number() over (
            partition by {% for k in key %}v.{{ k }}, {% endfor %}v.lsn, v.seq order by t.lsn, t.seq
        ) as nth
    from bounded v
    inner join truncates t on t.lsn > v.lsn or (t.lsn = v.lsn and t.seq > v.seq)
    where v.is_start

),

ended as (

    select
        v.*,
        t.t_lsn is not null
            and (v.next_lsn is null or t.t_lsn < v.next_lsn
                or (t.t_lsn = v.next_lsn and t.t_seq < v.next_seq)) as by_truncate,
        t.t_lsn, t.t_seq, t.t_ts
    from bounded v
    left join truncated t
        on {% for k in key %}t.{{ k }} = v.{{ k }} and {% endfor %}t.lsn = v.lsn and t.seq = v.seq
        and t.nth = 1
    where v.is_start

),

versions as (

    select
        {{ keys }},
        lsn, seq, op,
        case when by_truncate then t_ts else next_ts end as end_ts,
        case when by_truncate then 't' else next_op end as ended_by,
        case when by_truncate then t_lsn else next_lsn end as ended_lsn,
        case when by_truncate then t_seq else next_seq end as ended_seq,
        ts
    from ended

),

final as (

    select
        {% for k in key %}v.{{ k }},
        {% endfor %}{{ star_except('c', key + meta) }},
        -- a snapshot row's time is when the snapshot ran, which can be after the first change
        -- streamed behind it committed: such a version starts no later than its end
        case when v.end_ts < v.ts then v.end_ts else v.ts end as valid_from,
        v.end_ts as valid_to,
        v.op as started_by,
        v.ended_by,
        v.lsn as valid_from_lsn,
        v.seq as valid_from_seq,
        v.ended_lsn,
        v.ended_seq
    from versions v
    -- the image of a new version; a reopened one only gets its end (merge_update_columns)
    left join changes c on c._lsn = v.lsn and c._seq = v.seq

)

select * from final
{% endmacro %}


{#
    The rows of history/<table> as they were at `ts` (a timestamp expression): the version of
    each key valid at that instant, deleted keys left out. Use it where a relation goes:

        select order_id, status
        from {{ as_of('orders', business_time('2026-03-07 23:59:00')) }}
#}
{% macro as_of(table, ts) -%}
    (select * from {{ ref(table) }}
     where valid_from <= {{ ts }} and (valid_to is null or valid_to > {{ ts }}))
{%- endmacro %}


{#
    A wall-clock time of the business day (var partition_timezone, macros/business_date.sql) as a
    timestamp: business_time('2026-03-07 23:59:00') is 23:59 on 7 March in that zone.
#}
{% macro business_time(local_time) -%}
    {%- set text = local_time | string | trim -%}
    {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?$', text) -%}
        {{ exceptions.raise_compiler_error(
            "business_time takes 'YYYY-MM-DD[ HH:MM[:SS]]'; got '" ~ text ~ "'") }}
    {%- endif -%}
    {{ return(adapter.dispatch('business_time')(text, business_timezone())) }}
{%- endmacro %}

{% macro default__business_time(text, zone) -%}
    timestamp('{{ text }}', '{{ zone }}')
{%- endmacro %}

{% macro duckdb__business_time(text, zone) -%}
    timezone('{{ zone }}', cast('{{ text }}' as timestamp))
{%- endmacro %}
