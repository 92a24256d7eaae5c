using Broker.Storage.Errors;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

public sealed class ShutdownTests : IDisposable
{
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task Appends_racing_a_close_either_complete_durably_or_fail_with_shutting_down_and_none_hangs()
    {
        var options = new StorageOptions { DataDirectory = _data.Path };
        var store = await TopicStore.OpenAsync(options);
        await store.CreateTopicAsync("jobs", false, default);
        var topic = (await store.GetTopicAsync("jobs"));
        using var go = new ManualResetEventSlim();
        var appenders = Enumerable.Range(0, 200).Select(i => Task.Run(async () =>
        {
            go.Wait();
            try
            {
                return (await topic.AppendAsync(TopicStoreTests.Messages($"m{i}"))).FirstOffset;
            }
            catch (BrokerException error) when (error.Code == BrokerErrorCode.ShuttingDown)
            {
                return -1L;
            }
        })).ToList();

        go.Set();
        await store.DisposeAsync();
        var outcomes = await Task.WhenAll(appenders).WaitAsync(TimeSpan.FromSeconds(30));

        // Every append that was answered with an offset is durable.
        long acknowledged = outcomes.Count(o => o >= 0);
        await using var reopened = await TopicStore.OpenAsync(options);
        long nextOffset = (await reopened.GetTopicAsync("jobs")).NextOffset;
        Assert.True(nextOffset >= acknowledged);
        Assert.All(outcomes.Where(o => o >= 0), o => Assert.True(o < nextOffset));
    }
}
