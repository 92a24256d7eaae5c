using Broker.Storage.Groups;
using Broker.Storage.Topics;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Tests;

/// <summary>
/// Recovery of a group whose durable floor lies below the message log's begin address (what a broker that truncated
/// by in-memory floors could leave behind, or a damaged group-state log). Made for real: the group-state folder is
/// put back to an older copy after the log was truncated. Invariant: the broker reports the loss with its size,
/// moves the group to the oldest stored message durably (a second restart reports nothing), delivers everything
/// from there, and truncates again as acks move on: the group is never wedged.
/// </summary>
public sealed class FloorRepairTests : IDisposable
{
    private const int Messages = 1_600;   // 2 KiB each: about three 1 MiB segments
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task A_group_floor_below_the_log_is_reported_repaired_and_moves_on()
    {
        var options = new StorageOptions { DataDirectory = _data.Path, TopicSegmentSizeBits = 20, MaintenanceInterval = TimeSpan.FromDays(1) };
        string groups = Path.Combine(_data.Path, "topics", "jobs", "groups");
        string olderGroups = Path.Combine(_data.Path, "older-groups");
        var logs = new LogLines();

        // 1. A group at offset 0; its state as of then is kept aside.
        await using (var store = TopicStore.Open(options))
        {
            await store.CreateTopicAsync("jobs", false, default);
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(Payloads(0, Messages));
            await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
        }
        CopyFolder(groups, olderGroups);

        // 2. Everything acked durably; maintenance truncates the log below the floor.
        long firstAfterTruncation;
        await using (var store = TopicStore.Open(options))
        {
            var topic = await store.GetTopicAsync("jobs");
            await AckEverythingAsync(topic.FindGroup("g")!, Messages);
            await store.MaintainAllAsync(default);
            await topic.AppendAsync(Payloads(Messages, 1));   // commits the truncation
            firstAfterTruncation = await topic.GetFirstOffsetAsync(default);
        }
        Assert.True(firstAfterTruncation > 0, "maintenance did not truncate");

        // 3. The group state goes back to floor 0, below the log: reported, repaired, delivered from the oldest message.
        Directory.Delete(groups, recursive: true);
        CopyFolder(olderGroups, groups);
        await using (var store = TopicStore.Open(options, loggerFactory: logs))
        {
            var topic = await store.GetTopicAsync("jobs");
            var repair = Assert.Single(logs.Lines, line => line.EventId == 3001);
            Assert.Equal(LogLevel.Warning, repair.Level);
            Assert.Contains($"{firstAfterTruncation} messages it never acknowledged were truncated", repair.Message);
            var group = topic.FindGroup("g")!;
            Assert.Equal(firstAfterTruncation, group.DurableFloor().Floor);
            var delivered = await AckEverythingAsync(group, Messages + 1 - (int)firstAfterTruncation);
            Assert.Equal(firstAfterTruncation, delivered[0].Offset);

            // Not wedged: acks move the floor on and maintenance frees the segments behind it again.
            await topic.AppendAsync(Payloads(Messages + 1, Messages));
            await AckEverythingAsync(group, Messages);
            await store.MaintainAllAsync(default);
            await topic.AppendAsync(Payloads(2 * Messages + 1, 1));
            Assert.True(await topic.GetFirstOffsetAsync(default) > Messages, "the log was not truncated after the repair");
        }

        // 4. The repair was durable: a second restart reports nothing.
        logs.Clear();
        await using (var store = TopicStore.Open(options, loggerFactory: logs))
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.Equal(2 * Messages + 1, topic.FindGroup("g")!.Floor().Floor);
            Assert.DoesNotContain(logs.Lines, line => line.EventId == 3001);
        }
    }

    internal static List<AppendMessage> Payloads(int first, int count) =>
        Enumerable.Range(first, count).Select(i => AppendMessage.FromPayload(Enumerable.Repeat((byte)i, 2048).ToArray())).ToList();

    /// <summary>Fetches <paramref name="count"/> deliveries and acks them durably, in frames of 100.</summary>
    internal static async Task<List<GroupDelivery>> AckEverythingAsync(ConsumerGroup group, int count)
    {
        var member = group.Join(count);
        var delivered = new List<GroupDelivery>();
        while (delivered.Count < count)
            delivered.AddRange(await group.FetchAvailableAsync(member, count - delivered.Count, default));
        foreach (var frame in delivered.Chunk(100))
            Assert.Equal(frame.Length, (await group.SettleAsync(new SettleAction.Ack(), frame.Select(d => new DeliveryRef(d.Offset, d.Token)).ToList())).Accepted);
        group.Leave(member);
        return delivered;
    }

    internal static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string directory in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(directory.Replace(from, to, StringComparison.Ordinal));
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, file.Replace(from, to, StringComparison.Ordinal));
    }
}

/// <summary>Collects what storage logs, for tests that assert what it reports.</summary>
internal sealed class LogLines : ILoggerFactory, ILoggerProvider, ILogger
{
    private readonly List<(int EventId, LogLevel Level, string Message)> _lines = [];

    /// <summary>Forgets the lines logged so far.</summary>
    public void Clear()
    {
        lock (_lines)
            _lines.Clear();
    }

    /// <summary>The lines logged so far, copied under the lock the logging threads take.</summary>
    public List<(int EventId, LogLevel Level, string Message)> Lines
    {
        get
        {
            lock (_lines)
                return [.. _lines];
        }
    }

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_lines)
            _lines.Add((eventId.Id, logLevel, formatter(state, exception)));
    }

    public void Dispose()
    {
    }
}
