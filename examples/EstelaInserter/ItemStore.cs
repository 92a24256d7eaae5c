using System.Text.Json;
using Broker.Client;
using Microsoft.Data.Sqlite;

namespace EstelaInserter;

/// <summary>
/// The items table. A row's key is the message's topic and offset, so inserting a chunk again (it was committed but its
/// ack never reached the broker, and the broker delivered it again) changes nothing: exactly once in the table, from
/// at-least-once delivery.
/// </summary>
internal sealed class ItemStore(SqliteConnection connection) : IAsyncDisposable
{
    public static async Task<ItemStore> OpenAsync(string path)
    {
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        await connection.OpenAsync();
        await using var create = connection.CreateCommand();
        // synchronous=FULL: a transaction that returned from commit survives a crash, so acking after it is safe.
        create.CommandText = """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = FULL;
            CREATE TABLE IF NOT EXISTS items (
                topic TEXT NOT NULL,
                offset INTEGER NOT NULL,
                jid TEXT,
                payload TEXT NOT NULL,
                PRIMARY KEY (topic, offset));
            """;
        await create.ExecuteNonQueryAsync();
        return new ItemStore(connection);
    }

    /// <summary>Inserts the chunk in one transaction; returns how many rows were new.</summary>
    public async Task<int> InsertAsync(IReadOnlyList<BrokerMessage> chunk)
    {
        await using var transaction = (SqliteTransaction)await connection.BeginTransactionAsync();
        await using var insert = connection.CreateCommand();
        insert.Transaction = transaction;
        insert.CommandText = "INSERT OR IGNORE INTO items (topic, offset, jid, payload) VALUES ($topic, $offset, $jid, $payload)";
        var topic = insert.Parameters.Add("$topic", SqliteType.Text);
        var offset = insert.Parameters.Add("$offset", SqliteType.Integer);
        var jid = insert.Parameters.Add("$jid", SqliteType.Text);
        var payload = insert.Parameters.Add("$payload", SqliteType.Text);
        int inserted = 0;
        foreach (var message in chunk)
        {
            var item = message.Value<JsonElement>();
            topic.Value = message.Topic;
            offset.Value = message.Offset;
            jid.Value = item.ValueKind == JsonValueKind.Object && item.TryGetProperty("jid", out var id) ? id.ToString() : DBNull.Value;
            payload.Value = item.ValueKind == JsonValueKind.Object && item.TryGetProperty("payload", out var body) ? body.GetRawText() : item.GetRawText();
            inserted += await insert.ExecuteNonQueryAsync();
        }
        await transaction.CommitAsync();
        return inserted;
    }

    public async Task<long> CountAsync()
    {
        await using var count = connection.CreateCommand();
        count.CommandText = "SELECT COUNT(*) FROM items";
        return (long)(await count.ExecuteScalarAsync())!;
    }

    public ValueTask DisposeAsync() => connection.DisposeAsync();
}
