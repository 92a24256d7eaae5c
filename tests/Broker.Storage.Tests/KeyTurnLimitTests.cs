using System.Text;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

/// <summary>
/// An ordered group at its limit of messages waiting for a key's turn (lowered to 3 here) stops reading ahead, waits
/// for a turn to pass rather than for the log (which has unread entries), and goes on reading as turns pass: every
/// message arrives, each key's in order.
/// </summary>
public sealed class KeyTurnLimitTests : IDisposable
{
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task At_the_waiting_limit_the_group_waits_for_a_turn_and_then_reads_on()
    {
        var options = new StorageOptions { DataDirectory = _data.Path, MaintenanceInterval = TimeSpan.FromDays(1), MaxWaitingForTurn = 3 };
        await using var store = await TopicStore.OpenAsync(options, TimeProvider.System);
        await store.CreateTopicAsync("jobs", false, default);
        var topic = await store.GetTopicAsync("jobs");
        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, GroupPolicy.Default with { OrderedByKey = true }, default);
        await topic.AppendAsync([.. Enumerable.Range(0, 10).Select(i => Keyed("a", $"a{i}")), Keyed("b", "b0"), Keyed("b", "b1")]);
        var member = group.Join(100);

        // a0 goes out; a1-a3 wait (the limit); nothing else is read, so a fetch finds nothing more until a0 is done.
        var held = (await group.FetchAvailableAsync(member, 100, default)).ToList();
        Assert.Equal(["a0"], held.Select(Text));
        using (var shortWait = new CancellationTokenSource(TimeSpan.FromMilliseconds(300)))
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => group.FetchAsync(member, 100, shortWait.Token));

        // Each ack passes a turn: the next message of the key arrives, and the reader reads on as the waiting shrink.
        var order = new List<string> { "a0" };
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (order.Count < 12)
        {
            await group.SettleAsync(new SettleAction.Ack(), [.. held.Select(d => new DeliveryRef(d.Offset, d.Token))]);
            held = [.. await group.FetchAsync(member, 100, deadline.Token)];
            var keys = held.Select(d => Encoding.UTF8.GetString(d.Message.Key.Span)).ToList();
            Assert.Equal(keys.Count, keys.Distinct().Count());
            order.AddRange(held.Select(Text));
        }
        // Each key in publish order (keys proceed side by side once the reader reaches b's messages).
        Assert.Equal(Enumerable.Range(0, 10).Select(i => $"a{i}"), order.Where(t => t[0] == 'a'));
        Assert.Equal(["b0", "b1"], order.Where(t => t[0] == 'b'));
    }

    private static AppendMessage Keyed(string key, string payload) =>
        new(Encoding.UTF8.GetBytes(key), [], Encoding.UTF8.GetBytes(payload));

    private static string Text(GroupDelivery delivery) => Encoding.UTF8.GetString(delivery.Message.Payload.Span);
}
